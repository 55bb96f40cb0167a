//! The `e` key's export: the latency histogram the view shows, written as
//! percentile CSV and `.hgrm` files.

use std::io;

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
    let written = std::fs::File::create(&csv)
        .and_then(|f| {
            tracebench_loadgen::export::write_percentile_csv(&latency, io::BufWriter::new(f))
                .map(drop)
        })
        .and_then(|()| std::fs::File::create(&hgrm))
        .and_then(|f| {
            tracebench_loadgen::export::write_hgrm(&latency, io::BufWriter::new(f)).map(drop)
        });
    match written {
        Ok(()) => format!(
            "exported {} requests to {} and .hgrm",
            latency.len(),
            csv.display()
        ),
        Err(e) => format!("export failed: {e}"),
    }
}
