//! What the latency log cannot hold: per interval, the answers by status,
//! the failures by kind and the requests in flight at its end. The
//! dashboard records one line of it beside each line of `latency.hlog`
//! (`load.csv`), so a replay shows the errors and the in-flight count the
//! live run showed, not only latencies.
//!
//! ```text
//! interval,in_flight,statuses,errors
//! 0,10,200=55,
//! 1,9,200=60;503=2,reset=1;timeout=1
//! ```

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::Snapshot;
use crate::stats::ErrorKind;

/// The first line of the file.
pub const HEADER: &str = "interval,in_flight,statuses,errors";

/// One interval's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Requests in flight at the interval's end.
    pub in_flight: usize,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

/// Writes the header line.
pub fn write_header<W: Write>(out: &mut W) -> io::Result<()> {
    writeln!(out, "{HEADER}")
}

/// Writes `snapshot`'s line.
pub fn write_line<W: Write>(out: &mut W, snapshot: &Snapshot) -> io::Result<()> {
    let statuses: Vec<String> = snapshot
        .statuses
        .iter()
        .map(|(status, n)| format!("{status}={n}"))
        .collect();
    let errors: Vec<String> = snapshot
        .errors
        .iter()
        .map(|(kind, n)| format!("{}={n}", kind.label()))
        .collect();
    writeln!(
        out,
        "{},{},{},{}",
        snapshot.index,
        snapshot.in_flight,
        statuses.join(";"),
        errors.join(";")
    )
}

/// `name=count;name=count` into a map, keys parsed by `key`.
fn pairs<K: Ord>(text: &str, key: impl Fn(&str) -> Option<K>) -> Option<BTreeMap<K, u64>> {
    let mut map = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let (name, count) = pair.split_once('=')?;
        *map.entry(key(name)?).or_default() += count.parse::<u64>().ok()?;
    }
    Some(map)
}

/// Reads the outcomes by interval index, up to the first line that does
/// not read or has no end (a file cut mid-line keeps what precedes the
/// cut, as the latency log does: a cut line's last count could be short).
/// `None` if the text is not such a file at all.
pub fn read(text: &str) -> Option<BTreeMap<u64, Outcome>> {
    let mut lines = text.split_inclusive('\n');
    if lines.next()?.trim_end() != HEADER {
        return None;
    }
    let mut outcomes = BTreeMap::new();
    for line in lines {
        let Some((index, outcome)) = line.strip_suffix('\n').and_then(read_line) else {
            break;
        };
        outcomes.insert(index, outcome);
    }
    Some(outcomes)
}

fn read_line(line: &str) -> Option<(u64, Outcome)> {
    let mut fields = line.split(',');
    let index = fields.next()?.parse().ok()?;
    let in_flight = fields.next()?.parse().ok()?;
    let statuses = pairs(fields.next()?, |s| s.parse().ok())?;
    let errors = pairs(fields.next()?, |label| {
        ErrorKind::ALL.into_iter().find(|k| k.label() == label)
    })?;
    fields.next().is_none().then_some((
        index,
        Outcome {
            in_flight,
            statuses,
            errors,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(index: u64, in_flight: usize) -> Snapshot {
        Snapshot {
            index,
            start: Duration::from_millis(100 * index),
            duration: Duration::from_millis(100),
            latency: crate::stats::latency_histogram(),
            statuses: [(200, 55), (503, 2)].into_iter().collect(),
            errors: [(ErrorKind::Reset, 1), (ErrorKind::BadResponse, 3)]
                .into_iter()
                .collect(),
            in_flight,
            warmup: false,
        }
    }

    #[test]
    fn lines_read_back_as_written_and_a_cut_line_ends_the_file() {
        let mut out = Vec::new();
        write_header(&mut out).unwrap();
        write_line(&mut out, &snapshot(0, 10)).unwrap();
        write_line(&mut out, &snapshot(1, 7)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let outcomes = read(&text).unwrap();
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes[&1].in_flight, 7);
        assert_eq!(outcomes[&0].statuses[&503], 2);
        assert_eq!(outcomes[&0].errors[&ErrorKind::BadResponse], 3);
        // Cut in the middle of the last line: the whole lines stay.
        let cut = &text[..text.len() - 6];
        assert_eq!(read(cut).unwrap().len(), 1);
        let cut = &text[..text.len() - 1];
        assert_eq!(read(cut).unwrap().len(), 1, "a line without its end");
        assert_eq!(read("not,this\n1,2,3,4\n"), None);
    }
}
