//! The `e` key's export: the latency histogram the view shows, written as
//! percentile CSV and `.hgrm` files.

use tracebench_files::Output;

use crate::model::App;

/// Writes the latency histogram so far as percentile CSV and .hgrm (into
/// the recording's directory, or the current one), and says where.
pub fn write_latency(app: &App, record: Option<&std::path::Path>) -> String {
    let dir = record.unwrap_or(std::path::Path::new("."));
    let stamp = (app.data.elapsed_s * 10.0) as u64;
    let csv = dir.join(format!("latency-at-{}.{}s.csv", stamp / 10, stamp % 10));
    let hgrm = csv.with_extension("hgrm");
    // What the view shows: every answer, or those of the marked range.
    let latency = app.shown_latency();
    // Private files, whole or not at all, never through a symlink.
    let write = |path: &std::path::Path, hgrm: bool| -> Result<(), String> {
        let out = Output::create(path).map_err(|e| e.to_string())?;
        let out = if hgrm {
            tracebench_loadgen::export::write_hgrm(&latency, out)
        } else {
            tracebench_loadgen::export::write_percentile_csv(&latency, out)
        }
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        out.finish().map_err(|e| e.to_string())
    };
    let written = write(&csv, false).and_then(|()| write(&hgrm, true));
    match written {
        Ok(()) => format!(
            "exported {} requests to {} and .hgrm",
            latency.len(),
            csv.display()
        ),
        Err(e) => format!("export failed: {e}"),
    }
}
