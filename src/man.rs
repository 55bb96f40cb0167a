//! `tracebench man DIR`: a manual page per command, from the same
//! definitions as `--help` (clap_mangen), so the two cannot disagree.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes `tracebench.1` and `tracebench-COMMAND.1` for every subcommand of
/// `cli` into `dir` (created private if missing, as every directory we
/// make); returns the pages written. A page already there is replaced
/// whole, never written through a symlink.
pub fn write_pages(dir: &Path, cli: clap::Command) -> anyhow::Result<Vec<PathBuf>> {
    tracebench_files::OutputDir::create(dir)?;
    let mut pages = vec![("tracebench".to_owned(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("tracebench-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    let mut written = Vec::new();
    for (name, command) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .with_context(|| format!("rendering the page of {name}"))?;
        let path = dir.join(format!("{name}.1"));
        let mut out = tracebench_files::Output::create(&path)?;
        out.write_all(&page)
            .with_context(|| format!("writing {}", path.display()))?;
        out.finish()?;
        written.push(path);
    }
    Ok(written)
}
