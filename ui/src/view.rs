//! Widgets that only draw the model: a header, the thread table, the
//! throughput sparkline, the latency histogram with its percentiles, the
//! recent events, and the help overlay drawn from the key map.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Clear, Paragraph, Row, Sparkline, Table};
use tracebench_analysis::states::ThreadState;
use tracebench_export::render::syscall_name;

use crate::keys::help_lines;
use crate::model::{App, ExitedGroup, LowerPane, SortKey, TableRow, ThreadRow};

/// The colour of a state, as in the thread table and the legend.
pub fn state_color(state: ThreadState) -> Color {
    match state {
        ThreadState::Running => Color::Green,
        ThreadState::FutexWait(_) => Color::Yellow,
        ThreadState::Accept => Color::Cyan,
        ThreadState::Sleep => Color::Blue,
        ThreadState::Io => Color::Magenta,
        ThreadState::EventWait => Color::LightCyan,
        // Not white: it vanishes on a light terminal.
        ThreadState::Syscall(_) => Color::LightMagenta,
        ThreadState::Exited => Color::DarkGray,
        // Waiting for a CPU: the colour of trouble.
        ThreadState::Runnable => Color::Red,
        ThreadState::Blocked => Color::Gray,
    }
}

/// Each state's mark in the timeline and the legend: a shape of its own,
/// so the timeline reads without colour too (NO_COLOR, a colour-blind
/// reader, a monochrome terminal), the colour only adding to it.
pub fn state_glyph(state: ThreadState) -> &'static str {
    match state {
        ThreadState::Running => "█",
        ThreadState::FutexWait(_) => "▒",
        ThreadState::Accept => "▚",
        ThreadState::Sleep => "·",
        ThreadState::Io => "▓",
        ThreadState::EventWait => "▄",
        ThreadState::Syscall(_) => "▪",
        ThreadState::Exited => "_",
        ThreadState::Runnable => "▲",
        ThreadState::Blocked => "░",
    }
}

fn ms(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.0}µs", ns / 1e3)
    }
}

/// A bin label that fits a 6-column bar, to 3 significant digits so that
/// narrow bins keep distinct labels: `640µs`, `2.61ms`, `40.3ms`, `164ms`,
/// `1.30s`.
fn short(ns: u64) -> String {
    let ns = ns as f64;
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e3, "µs")
    };
    let decimals = match value {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    format!("{value:.decimals$}{unit}")
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame, app: &App) {
    let [header, threads, bottom] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(8),
        Constraint::Length(13),
    ])
    .areas(frame.area());
    draw_header(frame, header, app);
    draw_threads(frame, threads, app);
    let [events, load] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(load_width(bottom.width)),
    ])
    .areas(bottom);
    match app.view_state.lower_pane {
        LowerPane::Events => draw_events(frame, events, app),
        LowerPane::Futex => draw_futex(frame, events, app),
        LowerPane::Output => draw_output(frame, events, app),
    }
    let [throughput, latency] =
        Layout::vertical([Constraint::Length(5), Constraint::Min(5)]).areas(load);
    draw_throughput(frame, throughput, app);
    draw_latency(frame, latency, app);
    if app.view_state.help {
        draw_help(frame, app.replay);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let paused = if app.paused { "  [paused]" } else { "" };
    let mut title = Line::from(vec![
        Span::styled(
            format!("{}{paused}", app.title),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw("   ? help"),
    ]);
    // Last on the line: what does not fit is cut, and the end of the run
    // prints each caveat whole.
    for caveat in &app.caveats {
        title.push_span(Span::styled(
            format!("   ! {caveat}"),
            Style::default().fg(Color::Yellow),
        ));
    }
    let load = if app.view_state.connections > 0 {
        format!("c={}   ", app.view_state.connections)
    } else {
        String::new()
    };
    // Events the kernel lost are said only when there are some (only the
    // perf backend can lose any).
    let lost = if data.lost > 0 {
        format!("   {} LOST by the kernel", data.lost)
    } else {
        String::new()
    };
    let counters = Line::from(format!(
        "{:.0} s   {load}{:.0} req/s   {} answered   {} errors   {} in flight   {} events ({:.0}/s)   {} dropped{lost}",
        data.elapsed_s,
        data.recent_rate(),
        data.completed,
        data.failed,
        data.in_flight,
        data.events,
        data.events_per_s,
        data.dropped
    ));
    // Status messages (an export, say) go on the frame, where the long
    // counters line cannot push them out of sight.
    let mut block = Block::bordered().title(" tracebench ");
    if !app.view_state.status.is_empty() {
        block = block.title_bottom(Span::styled(
            format!(" {} ", app.view_state.status),
            Style::default().fg(Color::Yellow),
        ));
    }
    frame.render_widget(Paragraph::new(vec![title, counters]).block(block), area);
}

/// The threads pane's title: the colour of each state.
fn legend(sort: SortKey, search: &str, editing: bool) -> Line<'static> {
    let mut title = " threads".to_owned();
    if sort != SortKey::Tid {
        title += &format!(" by {}", sort.label());
    }
    if editing {
        title += &format!(" /{search}▏");
    } else if !search.is_empty() {
        title += &format!(" named *{search}*");
    }
    title += "   ";
    let mut spans = vec![Span::raw(title)];
    for state in [
        ThreadState::Running,
        ThreadState::FutexWait(0),
        ThreadState::Accept,
        ThreadState::Sleep,
        ThreadState::Io,
        ThreadState::EventWait,
        ThreadState::Syscall(0),
        ThreadState::Exited,
    ] {
        spans.push(Span::styled(
            format!("{} ", state_glyph(state)),
            Style::default().fg(state_color(state)),
        ));
        spans.push(Span::raw(format!("{}  ", state.label())));
    }
    Line::from(spans)
}

/// How many exited threads the table leaves out, if any.
fn hidden_note(app: &App) -> Line<'static> {
    let data = app.shown_data();
    let hidden = data.threads.len() - data.listed_threads(app.view_state.show_exited).count();
    if hidden == 0 {
        Line::default()
    } else {
        Line::from(format!(" {hidden} older exits hidden (x) ")).right_aligned()
    }
}

/// One thread's states over the timeline's window as coloured cells,
/// oldest left.
fn timeline_cells(app: &App, tid: i32, cells: usize) -> Line<'static> {
    let data = app.shown_data();
    let Some(row) = data.threads.get(&tid) else {
        return Line::default();
    };
    let start = data.now_ns.saturating_sub(app.view_state.window_ns);
    let step = (app.view_state.window_ns / cells.max(1) as u64).max(1);
    let spans: Vec<Span> = (0..cells)
        .map(
            |cell| match row.history.kind_at(start + cell as u64 * step, step) {
                Some(state) => {
                    Span::styled(state_glyph(state), Style::default().fg(state_color(state)))
                }
                None => Span::raw(" "),
            },
        )
        .collect();
    Line::from(spans)
}

/// The thread table's columns before the timeline, and their widths.
const THREAD_COLUMNS: [(&str, u16); 8] = [
    ("tid", 7),
    ("name", 10),
    ("role", 10),
    ("state", 17),
    ("for", 7),
    ("syscalls", 8),
    ("served", 6),
    ("cpu", 4),
];

/// The columns a table `width` wide shows, as indexes into
/// [`THREAD_COLUMNS`]: at a narrow width the least needed go first
/// (syscalls, cpu, served, role, for), so those that stay keep their whole
/// width: a name never reads `worker-`, a time never `19.1m`.
fn shown_columns(width: u16) -> Vec<usize> {
    const DROP_FIRST: [&str; 5] = ["syscalls", "cpu", "served", "role", "for"];
    // Borders, and the timeline's fewest cells.
    let room = width.saturating_sub(2 + 10);
    let mut shown: Vec<usize> = (0..THREAD_COLUMNS.len()).collect();
    let used = |shown: &[usize]| -> u16 { shown.iter().map(|&i| THREAD_COLUMNS[i].1 + 1).sum() };
    for name in DROP_FIRST {
        if used(&shown) <= room {
            break;
        }
        shown.retain(|&i| THREAD_COLUMNS[i].0 != name);
    }
    shown
}

/// A state as the table shows it: a futex wait with the low digits of its
/// address, which tell the futexes of one process apart.
/// A call outside the ones the state names is shown by its name; a state
/// a look at /proc gave, not the trace, ends in `~` (see the help).
fn state_text(state: ThreadState, sampled: bool) -> String {
    let text = match state {
        ThreadState::FutexWait(addr) => format!("futex-wait …{:05x}", addr & 0xf_ffff),
        ThreadState::Syscall(nr) => format!("in {}", syscall_name(nr)),
        other => other.label().to_owned(),
    };
    if sampled { text + "~" } else { text }
}

/// One thread's cells, every column's then the timeline's.
fn thread_cells<'a>(
    app: &App,
    tid: i32,
    row: &ThreadRow,
    cells: usize,
) -> Vec<ratatui::widgets::Cell<'a>> {
    let data = app.shown_data();
    let current = data.state_of(tid);
    let since = data.now_ns.saturating_sub(data.since_of(tid));
    vec![
        ratatui::widgets::Cell::from(tid.to_string()),
        row.name.clone().into(),
        data.role_of(tid).into(),
        ratatui::widgets::Cell::from(state_text(current, row.sampled))
            .style(Style::default().fg(state_color(current))),
        ms(since).into(),
        data.syscalls_of(tid).to_string().into(),
        match data.served_by(tid) {
            0 => String::new(),
            n => n.to_string(),
        }
        .into(),
        row.cpu
            .map_or_else(String::new, |c| format!("{c:.0}%"))
            .into(),
        timeline_cells(app, tid, cells).into(),
    ]
}

/// The cells of exited threads taken together (`g` shows each).
fn group_cells<'a>(group: &ExitedGroup) -> Vec<ratatui::widgets::Cell<'a>> {
    vec![
        ratatui::widgets::Cell::from(format!("×{}", group.count)),
        group.pattern.clone().into(),
        group.role.into(),
        ratatui::widgets::Cell::from("exited")
            .style(Style::default().fg(state_color(ThreadState::Exited))),
        String::new().into(),
        group.syscalls.to_string().into(),
        match group.served {
            0 => String::new(),
            n => n.to_string(),
        }
        .into(),
        String::new().into(),
        format!(
            "{} threads lived p50 {}, p99 {}, max {} (g: each)",
            group.count,
            ms(group.lived_at(0.5)),
            ms(group.lived_at(0.99)),
            ms(group.lived_at(1.0))
        )
        .into(),
    ]
}

fn draw_threads(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let columns = shown_columns(area.width);
    let fixed: u16 = columns.iter().map(|&i| THREAD_COLUMNS[i].1 + 1).sum();
    let cells = area.width.saturating_sub(fixed + 2).max(10) as usize;
    // Only the shown columns, then the timeline.
    let pick =
        |mut all: Vec<ratatui::widgets::Cell<'static>>| -> Vec<ratatui::widgets::Cell<'static>> {
            let timeline = all.pop();
            let mut kept: Vec<_> = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| columns.contains(i))
                .map(|(_, cell)| cell)
                .collect();
            kept.extend(timeline);
            kept
        };
    let table_rows = data.sorted_table_rows(&app.view_state);
    // The selected row is kept in view: with more threads than rows (fork
    // mode makes one per request), selecting scrolls the table.
    let selected = app.view_state.selected.and_then(|tid| {
        table_rows
            .iter()
            .position(|row| matches!(row, TableRow::Thread(t, _) if *t == tid))
    });
    let rows: Vec<Row> = table_rows
        .into_iter()
        .map(|row| match row {
            TableRow::Thread(tid, row) => {
                let style = if app.view_state.selected == Some(tid) {
                    Style::default().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                };
                Row::new(pick(thread_cells(app, tid, row, cells))).style(style)
            }
            TableRow::Exited(group) => Row::new(pick(group_cells(&group))),
        })
        .collect();
    let widths = columns
        .iter()
        .map(|&i| Constraint::Length(THREAD_COLUMNS[i].1))
        .chain([Constraint::Min(10)]);
    let header = columns
        .iter()
        .map(|&i| THREAD_COLUMNS[i].0.to_string())
        .chain([format!("last {}", ms(app.view_state.window_ns))]);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(
            Block::bordered()
                .title(legend(
                    app.view_state.sort,
                    &app.view_state.search,
                    app.view_state.search_editing,
                ))
                .title(hidden_note(app)),
        );
    let mut state = ratatui::widgets::TableState::default()
        .with_offset(app.view_state.table_offset.get())
        .with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
    app.view_state.table_offset.set(state.offset());
}

fn draw_events(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let height = area.height.saturating_sub(2) as usize;
    let width = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = data
        .recent
        .iter()
        .filter(|event| app.shows_events_of(event.tid))
        .rev()
        .take(height)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|event| Line::from(fit(event.line(data.origin_ns), width)))
        .collect();
    let title = match app.view_state.selected {
        Some(tid) if app.view_state.filter => format!(" recent events of {tid} (enter: all) "),
        _ => " recent events ".to_owned(),
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

/// The load panes' width: what their widest line needs (the latency
/// percentiles), at most 60 % of the screen; the events pane takes the
/// rest, for the calls' arguments.
fn load_width(width: u16) -> u16 {
    const LOAD_PANES: u16 = 70;
    LOAD_PANES.min(width * 3 / 5)
}

/// `line` in `width` columns: a call too long for them loses the end of
/// its arguments, never its result and duration (`accept4(3, …) = 7`),
/// which are what a reader of the pane looks for.
fn fit(line: String, width: usize) -> String {
    // What goes first when the pane is narrow: the time of every line
    // (below 60 columns; the pane is in time order anyway, and every line
    // keeps one layout), then the arguments, then the call's duration; the
    // thread, the call's name and its result stay.
    let mut line = match line.trim_start().split_once(' ') {
        Some((time, rest)) if width < 60 && time.parse::<f64>().is_ok() => rest.to_owned(),
        _ => line,
    };
    if line.chars().count() <= width {
        return line;
    }
    if let Some(cut) = cut_arguments(&line, width) {
        return cut;
    }
    if line.ends_with('>')
        && let Some(at) = line.rfind(" <")
    {
        line.truncate(at);
    }
    cut_arguments(&line, width).unwrap_or(line)
}

/// `line` with its call's arguments cut to fit `width` (`name(7, 0x…) =
/// 3`), if the name and the result fit at all.
fn cut_arguments(line: &str, width: usize) -> Option<String> {
    if line.chars().count() <= width {
        return Some(line.to_owned());
    }
    let result_at = line.rfind(") = ")?;
    let name_end = line[..result_at].find('(')? + 1;
    let tail = &line[result_at..];
    let keep = width.checked_sub(tail.chars().count() + 1)?;
    if keep < line[..name_end].chars().count() {
        return None;
    }
    let head: String = line[..result_at].chars().take(keep).collect();
    Some(format!("{head}…{tail}"))
}

/// The traced program's last lines of output, newest at the bottom.
fn draw_output(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let block = Block::bordered().title(" program output (o: events) ");
    let note = if !app.captures_output && app.replay {
        Some("A replay has no program output: the recording's output.log has it.")
    } else if !app.captures_output {
        Some("A program we attached to writes where it always did: its output is not ours to show.")
    } else if data.output.is_empty() {
        Some("(no output yet)")
    } else {
        None
    };
    if let Some(note) = note {
        frame.render_widget(
            Paragraph::new(Line::styled(note, Style::default().fg(Color::DarkGray)))
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let height = area.height.saturating_sub(2) as usize;
    let skip = data.output.len().saturating_sub(height);
    let lines: Vec<Line> = data
        .output
        .iter()
        .skip(skip)
        .map(|line| Line::raw(line.as_str()))
        .collect();
    // Not wrapped, so the newest line is always the bottom row (all of
    // every line is in the recording's output.log).
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_futex(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let height = area.height.saturating_sub(3) as usize;
    let rows = data.futex.top(height).into_iter().map(|(key, word)| {
        Row::new(vec![
            format!("…{:05x}", key.addr & 0xf_ffff),
            word.waits.to_string(),
            word.wakes.to_string(),
            format!("{:.1}", word.woken_per_wake()),
            ms(word.wake_to_run.quantile_bound_ns(0.5)),
            word.eagain.to_string(),
            word.timeouts.to_string(),
            word.herds.to_string(),
        ])
    });
    let herds: u64 = data.futex.totals().herds;
    let title = if herds > 0 {
        format!(" futex words   {herds} thundering herds (f: events) ")
    } else {
        " futex words (f: events) ".to_owned()
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(3),
            Constraint::Length(5),
        ],
    )
    .header(
        Row::new(vec![
            "word", "waits", "wakes", "woken", "→run", "again", "t/o", "herds",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_throughput(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let width = area.width.saturating_sub(2) as usize;
    let samples: Vec<u64> = data
        .throughput
        .iter()
        .rev()
        .take(width)
        .rev()
        .copied()
        .collect();
    let sparkline = Sparkline::default()
        .data(&samples)
        .style(Style::default().fg(Color::Green))
        .block(Block::bordered().title(format!(
            " answered per 100 ms (now {:.0} req/s) ",
            data.recent_rate()
        )));
    frame.render_widget(sparkline, area);
}

fn draw_latency(frame: &mut Frame, area: Rect, app: &App) {
    let data = app.shown_data();
    let shown = data.shown_latency(app.view_state.range_mark.as_ref());
    let h = shown.as_ref();
    let title = match &app.view_state.range_mark {
        Some(mark) => {
            let at = |ns: u64| ns.saturating_sub(data.origin_ns) as f64 / 1e9;
            let (from, to) = (
                at(mark.at_ns).min(at(data.now_ns)),
                at(mark.at_ns).max(at(data.now_ns)),
            );
            format!(" latency of the requests answered from {from:.1} s to {to:.1} s (r: all) ")
        }
        None => " latency of the answered requests ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [percentiles, server, area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(inner);
    let (queue, service) = data.shown_server_times(app.view_state.range_mark.as_ref());
    if !service.is_empty() {
        // The server's side, from the trace: the client's total minus this
        // is the network and the listen backlog.
        let text = format!(
            "server: queued p50 {} p99 {} · served p50 {} p99 {}",
            ms(queue.value_at_quantile(0.5)),
            ms(queue.value_at_quantile(0.99)),
            ms(service.value_at_quantile(0.5)),
            ms(service.value_at_quantile(0.99)),
        );
        frame.render_widget(
            Paragraph::new(text).style(Style::default().fg(Color::Cyan)),
            server,
        );
    }
    if !h.is_empty() {
        let text = format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );
        frame.render_widget(
            Paragraph::new(text).style(Style::default().add_modifier(Modifier::BOLD)),
            percentiles,
        );
    }
    // Bins over the measured range, as oha spreads them: as many as fit,
    // from the fastest request to the 99.9th percentile (the last bin
    // takes the rest up to the slowest), linear unless the range spans
    // more than a factor of 20, then log-spaced so the body keeps its
    // bins. The bins holding p50 and p99 take their colours.
    const BAR_WIDTH: u16 = 6;
    let fit = (area.width / (BAR_WIDTH + 1)).max(1) as usize;
    let edges = latency_bins(h, fit);
    let (p50, p99) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
    let counts = bin_counts(h, &edges);
    let mut bars = Vec::new();
    for (bin, count) in counts.iter().enumerate() {
        let high = edges[bin + 1];
        let mut bar = Bar::default().value(*count).label(Line::from(short(high)));
        if !h.is_empty() && bin_of(&edges, p99) == bin {
            bar = bar.style(Style::default().fg(Color::Red));
        } else if !h.is_empty() && bin_of(&edges, p50) == bin {
            bar = bar.style(Style::default().fg(Color::Green));
        }
        bars.push(bar);
    }
    let chart = BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(BAR_WIDTH)
        .bar_gap(1);
    frame.render_widget(chart, area);
}

/// The bin of `edges` that holds `value`: below the first edge is the
/// first bin, above the last the last.
fn bin_of(edges: &[u64], value: u64) -> usize {
    let bins = edges.len().saturating_sub(1).max(1);
    edges.partition_point(|&e| e <= value).clamp(1, bins) - 1
}

/// How many recorded values fall in each bin of `edges`: every value
/// counted once (the histogram's own ranges would overlap at edges that
/// are not its bucket boundaries).
fn bin_counts(h: &hdrhistogram::Histogram<u64>, edges: &[u64]) -> Vec<u64> {
    let mut counts = vec![0; edges.len().saturating_sub(1).max(1)];
    for value in h.iter_recorded() {
        counts[bin_of(edges, value.value_iterated_to())] += value.count_at_value();
    }
    counts
}

/// The edges of up to `fit` latency bins (`fit + 1` values, ns): from
/// the 0.1th to the 99.9th percentile (the first and last bins take what
/// lies beyond), linear, or log-spaced
/// when that range spans more than a factor of 20. An empty histogram gets
/// factor-of-2 bins from 10 µs, so the pane has its axis before the first
/// answer.
fn latency_bins(h: &hdrhistogram::Histogram<u64>, fit: usize) -> Vec<u64> {
    let fit = fit.max(1);
    if h.is_empty() {
        return (0..=fit as u32).map(|i| 10_000u64 << i.min(40)).collect();
    }
    let low = h.value_at_quantile(0.001).max(1);
    let high = h.value_at_quantile(0.999).max(low + 1);
    // No narrower than the histogram tells values apart (3 significant
    // digits), or neighbouring bins would count the same values twice.
    let finest = (high / 1000).max(1);
    let bins = fit.min(((high - low) / finest) as usize).max(1);
    let log = high as f64 / low as f64 > 20.0;
    let mut edges: Vec<u64> = (0..=bins)
        .map(|i| {
            let at = i as f64 / bins as f64;
            if log {
                (low as f64 * (high as f64 / low as f64).powf(at)).round() as u64
            } else {
                low + ((high - low) as f64 * at).round() as u64
            }
        })
        .collect();
    edges.dedup();
    if edges.len() < 2 {
        edges.push(low + 1);
    }
    edges
}

fn draw_help(frame: &mut Frame, replay: bool) {
    let area = frame.area();
    let width = 66.min(area.width);
    let mut lines: Vec<Line> = help_lines(replay)
        .into_iter()
        .map(|(keys, help)| Line::from(format!("{keys:>10}  {help}")))
        .collect();
    // Too short a terminal: say what is cut rather than cut it silently.
    let room = usize::from(area.height.saturating_sub(2));
    if lines.len() > room && room > 1 {
        let cut = lines.len() - (room - 1);
        lines.truncate(room - 1);
        lines.push(Line::from(format!(
            "         …  {cut} more: a taller terminal shows them"
        )));
    }
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tracebench_trace::DataCapture;
    use tracebench_trace::{Creation, Event, EventKind};

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(150, 36)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_state_has_a_mark_of_its_own_not_only_a_colour() {
        // Issue 15: with NO_COLOR the timeline was identical blocks.
        let states = crate::history::KINDS;
        let glyphs: std::collections::HashSet<&str> =
            states.iter().map(|&s| state_glyph(s)).collect();
        assert_eq!(glyphs.len(), states.len());
        assert!(states.iter().all(|&s| state_color(s) != Color::White));
    }

    #[test]
    fn narrow_tables_drop_whole_columns_least_needed_first() {
        let names = |width| -> Vec<&str> {
            shown_columns(width)
                .into_iter()
                .map(|i| THREAD_COLUMNS[i].0)
                .collect()
        };
        assert_eq!(names(150).len(), THREAD_COLUMNS.len());
        assert!(!names(80).contains(&"syscalls"));
        assert!(names(80).contains(&"name") && names(80).contains(&"state"));
        assert_eq!(names(40), ["tid", "name", "state"]);
    }

    #[test]
    fn a_long_call_keeps_its_result_in_a_narrow_events_pane() {
        // Issue 16: at 120x40 the pane was 46 columns and cut the results
        // of accept4 and epoll_wait off.
        let line = "12.000001 [4242] epoll_wait(7, 0x7ffd5c2a1b40, 512, -1) = 3 <0.000312>";
        let fitted = fit(line.to_owned(), 40);
        assert_eq!(fitted.chars().count(), 40, "{fitted}");
        assert!(fitted.ends_with(") = 3 <0.000312>"), "{fitted}");
        // The time goes first: the thread and the call's name stay.
        assert!(fitted.starts_with("[4242] epoll_wait(7, "), "{fitted}");
        assert_eq!(
            fit("1.5 [7] close(3) = 0".to_owned(), 40),
            "[7] close(3) = 0"
        );
        let wide = fit(line.to_owned(), 64);
        assert!(
            wide.starts_with("12.000001 [4242] epoll_wait(7, "),
            "{wide}"
        );
        assert_eq!(fit(line.to_owned(), 200), line, "room enough: unchanged");
        // Narrower still: the duration goes, then the arguments; the name
        // and the result never.
        let fitted = fit(line.to_owned(), 30);
        assert_eq!(fitted, "[4242] epoll_wait(7, 0x7…) = 3", "{fitted}");
    }

    fn sample_app() -> App {
        let mut app = App::new("server pool-futex (5 workers)");
        let e = |time_ns, tid, kind| {
            Action::Trace(Event {
                time_ns,
                pid: 10,
                tid,
                kind,
            })
        };
        app.update(e(
            1,
            10,
            EventKind::Spawned {
                child_tid: 11,
                child_pid: 10,
                creation: Creation::Thread,
            },
        ));
        let futex = syscalls::Sysno::futex.id() as u32;
        let accept4 = syscalls::Sysno::accept4.id() as u32;
        app.update(e(
            2,
            11,
            EventKind::SyscallEntry {
                nr: futex,
                args: [0xbeef, 128, 0, 0, 0, 0],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        app.update(e(
            3,
            10,
            EventKind::SyscallEntry {
                nr: accept4,
                args: [3, 0, 0, 0, 0, 0],
                data: vec![],
                data_capture: DataCapture::Captured,
            },
        ));
        app.update(Action::Named {
            tid: 11,
            name: "worker-0".into(),
        });
        app.update(Action::Named {
            tid: 10,
            name: "tracebench".into(),
        });
        let mut latency = tracebench_loadgen::stats::latency_histogram();
        for _ in 0..90 {
            latency.record(101_000_000).unwrap();
        }
        latency.record(3_000_000).unwrap();
        app.update(Action::Load(tracebench_loadgen::Snapshot {
            index: 0,
            start: std::time::Duration::ZERO,
            duration: std::time::Duration::from_millis(100),
            latency,
            statuses: [(200u16, 91)].into_iter().collect(),
            errors: Default::default(),
            in_flight: 10,
            warmup: false,
        }));
        app
    }

    #[test]
    fn the_panes_show_threads_states_and_latency() {
        let text = screen(&sample_app());
        for needle in [
            "threads",
            "worker-0",
            "futex-wait …0beef",
            "accept",
            "p50 101.1ms",
            "91 answered",
            "10 in flight",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // The bins span the measured range, up to the slowest request.
        assert!(text.contains("101ms") || text.contains("102ms"), "{text}");
    }

    #[test]
    fn latency_bins_follow_the_measured_range_and_count_each_request_once() {
        // Issue 15: factor-of-2 buckets put a tight distribution in one bar.
        let mut tight = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for i in 0..1000u64 {
            tight.record(100_000_000 + i * 10_000).unwrap(); // 100 to 110 ms
        }
        let edges = latency_bins(&tight, 10);
        assert_eq!(edges.len(), 11, "{edges:?}");
        assert_eq!(edges[0], tight.value_at_quantile(0.001));
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "{edges:?}");
        let counts = bin_counts(&tight, &edges);
        assert!(counts.iter().filter(|&&c| c > 0).count() >= 8, "{counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), 1000, "{counts:?}");
        // A long tail: log-spaced, so the body still gets bins.
        let mut tail = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for i in 0..990u64 {
            tail.record(1_000_000 + i * 1_000).unwrap(); // 1 to 2 ms
        }
        for _ in 0..10 {
            tail.record(900_000_000).unwrap(); // 900 ms
        }
        let edges = latency_bins(&tail, 10);
        assert!(edges[1] - edges[0] < edges[9] - edges[8], "{edges:?}");
        assert!(
            latency_bins(&hdrhistogram::Histogram::new(3).unwrap(), 3)
                == [10_000, 20_000, 40_000, 80_000]
        );
    }

    #[test]
    fn help_and_pause_show_on_screen() {
        let mut app = sample_app();
        app.update(Action::ToggleHelp);
        app.update(Action::TogglePause);
        let text = screen(&app);
        assert!(
            text.contains("pause the view (data keeps coming)"),
            "{text}"
        );
        assert!(text.contains("[paused]"), "{text}");
    }

    #[test]
    fn selecting_a_thread_below_the_pane_scrolls_the_table_to_it() {
        let mut app = App::new("many threads");
        for tid in 1000..1060 {
            app.update(Action::Trace(Event {
                time_ns: 1,
                pid: 1000,
                tid,
                kind: EventKind::Signal {
                    signal: 10,
                    info: Vec::new(),
                },
            }));
        }
        assert!(!screen(&app).contains("1050 "), "out of view at first");
        for _ in 0..51 {
            app.update(Action::SelectNext);
        }
        assert_eq!(app.view_state.selected, Some(1050));
        let shown = screen(&app);
        assert!(shown.contains("1050 "), "{shown}");
        // One row up stays in view: the table does not move.
        let first_row = |text: &str| text.lines().find(|l| l.contains("│10")).map(str::to_owned);
        let before = first_row(&shown);
        app.update(Action::SelectPrevious);
        assert_eq!(
            first_row(&screen(&app)),
            before,
            "no scrolling within the view"
        );
    }

    #[test]
    fn the_timeline_draws_each_threads_states_and_zooms() {
        let mut app = sample_app();
        let text = screen(&app);
        assert!(text.contains("last 5.00s"), "{text}");
        let worker_row = text.lines().find(|l| l.contains("worker-0")).unwrap();
        assert!(
            worker_row.contains(['█', '▒', '▚', '▓', '▪']),
            "{worker_row}"
        );
        app.update(Action::ZoomIn);
        assert!(screen(&app).contains("last 2.50s"));
        for _ in 0..20 {
            app.update(Action::ZoomOut);
        }
        assert!(
            screen(&app).contains("last 60.00s"),
            "zoom stops at a minute"
        );
    }
}

/// Snapshots of every pane and of the whole screen at 120x40, drawn from
/// the recording in `tests/fixtures/run` (made by its `make-fixture.sh`).
#[cfg(test)]
mod snapshots {
    use super::*;
    use crate::model::Action;
    use crate::replay::{Player, load};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/run");

    /// The fixture played to 0.8 s, mid-run, with a stable title.
    fn played() -> Player {
        let mut player = load(std::path::Path::new(FIXTURE)).expect("the fixture recording");
        let start = player.start_ns();
        player.seek(start + 800_000_000);
        player.app.title = "replay of tests/fixtures/run".into();
        player
    }

    fn render(width: u16, height: u16, draw: impl FnOnce(&mut Frame)) -> TestBackend {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(draw).unwrap();
        terminal.backend().clone()
    }

    #[test]
    fn whole_screen() {
        let player = played();
        insta::assert_snapshot!(render(120, 40, |f| draw(f, &player.app)));
    }

    #[test]
    fn whole_screen_at_the_common_terminal_sizes() {
        // Issue 15: snapshots at 60×20, 80×24 and 200×60 (120×40 above).
        // The text is the same with or without colour: each state has its
        // mark (NO_COLOR changes colours only).
        let player = played();
        for (width, height) in [(60, 20), (80, 24), (200, 60)] {
            let screen = render(width, height, |f| draw(f, &player.app));
            let text: String = screen
                .buffer()
                .content()
                .iter()
                .map(|c| c.symbol())
                .collect();
            // Names and times whole at every size (the table drops columns
            // rather than cut them).
            assert!(text.contains("worker-0"), "{width}×{height}");
            insta::assert_snapshot!(format!("whole_screen_{width}x{height}"), screen);
        }
    }

    #[test]
    fn whole_screen_with_help_and_a_filtered_thread() {
        let mut player = played();
        player.app.update(Action::SelectNext);
        player.app.update(Action::SelectNext);
        player.app.update(Action::ToggleFilter);
        player.app.update(Action::ToggleHelp);
        insta::assert_snapshot!(render(120, 40, |f| draw(f, &player.app)));
    }

    #[test]
    fn header_pane() {
        let mut player = played();
        player.app.view_state.connections = 6;
        player.app.update(Action::TogglePause);
        player
            .app
            .update(Action::Status("exported 12 requests to x.csv".into()));
        insta::assert_snapshot!(render(120, 4, |f| draw_header(f, f.area(), &player.app)));
    }

    #[test]
    fn threads_pane() {
        let player = played();
        insta::assert_snapshot!(render(120, 8, |f| draw_threads(f, f.area(), &player.app)));
    }

    #[test]
    fn threads_pane_at_80_and_60_columns_keeps_whole_names_and_times() {
        // Issue 15: at 80 columns every worker read "worker-", at 60
        // "19.1ms" read "19.1m": narrow tables drop columns, not letters.
        let player = played();
        let at_80 = render(80, 8, |f| draw_threads(f, f.area(), &player.app)).to_string();
        let at_60 = render(60, 8, |f| draw_threads(f, f.area(), &player.app)).to_string();
        assert!(at_80.contains("worker-0 "), "{at_80}");
        assert!(at_60.contains("worker-0 "), "{at_60}");
        assert!(at_60.contains("ms "), "{at_60}");
        insta::assert_snapshot!(format!("{at_80}\n{at_60}"));
    }

    #[test]
    fn events_pane() {
        let player = played();
        insta::assert_snapshot!(render(48, 13, |f| draw_events(f, f.area(), &player.app)));
    }

    #[test]
    fn latency_pane_of_a_marked_range() {
        let mut player = played();
        player.seek(player.start_ns() + 300_000_000);
        player.app.update(Action::MarkRange);
        player.seek(player.start_ns() + 800_000_000);
        insta::assert_snapshot!(render(72, 8, |f| draw_latency(f, f.area(), &player.app)));
    }

    #[test]
    fn futex_pane() {
        let player = played();
        insta::assert_snapshot!(render(48, 13, |f| draw_futex(f, f.area(), &player.app)));
    }

    #[test]
    fn output_pane() {
        let mut player = played();
        player.app.captures_output = true;
        for line in [
            "listening on http://127.0.0.1:8080 (mode pool-futex)",
            "\u{1b}[32mserved\u{1b}[0m 10 requests",
            "a line longer than the pane is cut at its edge, not wrapped",
        ] {
            player.app.update(Action::Output(line.into()));
        }
        insta::assert_snapshot!(render(48, 8, |f| draw_output(f, f.area(), &player.app)));
    }

    #[test]
    fn output_pane_of_a_replay() {
        let player = played();
        insta::assert_snapshot!(render(48, 5, |f| draw_output(f, f.area(), &player.app)));
    }

    #[test]
    fn throughput_pane() {
        let player = played();
        insta::assert_snapshot!(render(72, 5, |f| draw_throughput(f, f.area(), &player.app)));
    }

    #[test]
    fn latency_pane() {
        let player = played();
        insta::assert_snapshot!(render(72, 8, |f| draw_latency(f, f.area(), &player.app)));
    }

    #[test]
    fn help_overlay() {
        insta::assert_snapshot!(render(70, 24, |f| draw_help(f, true)));
    }
}
