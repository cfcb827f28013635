//! Audit: the log, newest first, rendering only the visible window of the index.

use super::{col, fit};
use crate::tui::state::{Chain, Load, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

/// Badge line, list.
pub fn areas(body: Rect) -> [Rect; 2] {
    Layout::vertical([Constraint::Length(1), Constraint::Min(3)]).areas(body)
}

/// The chain badge text and whether it is good news.
pub fn chain_badge(state: &State) -> (String, Option<bool>) {
    let head = state.audit.index.head_seq();
    match &state.audit.chain {
        Chain::Unknown => ("chain not verified yet (v)".into(), None),
        Chain::Verifying => ("verifying the chain…".into(), None),
        Chain::Verified { upto, checkpoints } => {
            let mut s = format!("✔ chain verified up to entry {upto}");
            if *checkpoints > 0 {
                s.push_str(&format!(", {checkpoints} checkpoint(s)"));
            }
            if head > *upto {
                s.push_str(&format!(" (+{} newer, v to verify)", head - upto));
            }
            (s, Some(true))
        }
        Chain::Broken { at, .. } => (format!("✘ chain BROKEN at entry {at}"), Some(false)),
        Chain::Failed(e) => (format!("✘ cannot verify: {e}"), Some(false)),
    }
}

pub fn render(frame: &mut Frame, body: Rect, state: &State, theme: &Theme) {
    let [badge_area, list] = areas(body);
    let view = &state.audit;
    let (badge, good) = chain_badge(state);
    let badge_style = match good {
        Some(true) => theme.hw_badge(),
        Some(false) => theme.bad(),
        None => theme.dim(),
    };
    let total = view.index.len();
    let shown = view.visible_len();
    let mut spans = vec![
        Span::styled(format!(" {badge} "), badge_style),
        Span::raw("  "),
    ];
    if view.filter.is_empty() {
        spans.push(Span::styled(format!("{total} entries"), theme.dim()));
    } else {
        spans.push(Span::styled(
            format!("{shown} of {total} match {}", view.filter.describe()),
            theme.warn(),
        ));
        if let Some(scan) = &view.scan {
            let done = total.saturating_sub(scan.remaining) * 100 / total.max(1);
            spans.push(Span::styled(format!("  filtering… {done}%"), theme.dim()));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), badge_area);

    let mut title = " Audit log (newest first) ".to_string();
    if let Chain::Broken { message, .. } = &view.chain {
        title = format!(" Audit log — {} ", fit(message, 60));
    }
    let block = Block::bordered()
        .title(Span::styled(title, theme.title()))
        .title_bottom(Span::styled(
            " / search · f filter · c clear · v verify ",
            theme.dim(),
        ))
        .border_style(theme.border());
    let inner = block.inner(list);
    frame.render_widget(block, list);
    let w = inner.width as usize;
    let wide = w >= 110;
    let (sw, tw, aw, ow, ew) = if wide {
        (8, 20, 18, 8, 18)
    } else if w >= 90 {
        (8, 20, 0, 8, 16)
    } else {
        (8, 15, 0, 8, 0)
    };
    let mut header = format!("{}{}", col("SEQ", sw), col("TIME", tw));
    if aw > 0 {
        header.push_str(&col("ACTOR", aw));
    }
    header.push_str(&col("OUTCOME", ow));
    if ew > 0 {
        header.push_str(&col("EVENT", ew));
    }
    header.push_str("SUMMARY");
    let mut lines = vec![Line::from(Span::styled(fit(&header, w), theme.header()))];
    match &view.load {
        Load::Loading => lines.push(Line::from(Span::styled(
            format!("indexing the audit log… {} entries", view.loading_entries),
            theme.dim(),
        ))),
        Load::Failed(e) => lines.push(Line::from(Span::styled(fit(e, w), theme.bad()))),
        Load::Ready if shown == 0 => lines.push(Line::from(Span::styled(
            if total == 0 {
                "the log is empty"
            } else {
                "no entry matches (c clears the filter)"
            },
            theme.dim(),
        ))),
        Load::Ready => {}
    }
    let rows = (inner.height as usize).saturating_sub(1);
    let start = view.cursor.window_start(shown, rows);
    let idx = &view.index;
    let summary_w = w.saturating_sub(sw + tw + aw + ow + ew);
    for pos in start..(start + rows).min(shown) {
        let Some(r) = view.row_at(pos).and_then(|i| idx.row(i)) else {
            continue;
        };
        let time = idx.time(r);
        let time = if tw < 20 {
            time.get(5..).unwrap_or(time)
        } else {
            time
        };
        let mut spans = vec![
            Span::styled(col(&r.seq.to_string(), sw), theme.dim()),
            Span::raw(col(time, tw)),
        ];
        if aw > 0 {
            spans.push(Span::raw(col(idx.actors.name(r.actor), aw)));
        }
        spans.push(Span::styled(
            col(&r.outcome.to_string(), ow),
            theme.outcome(r.outcome),
        ));
        if ew > 0 {
            spans.push(Span::raw(col(idx.kinds.name(r.kind as u32), ew)));
        }
        spans.push(Span::raw(fit(idx.summary(r), summary_w)));
        let mut line = Line::from(spans);
        if pos == view.cursor.selected {
            line = line.style(theme.selected());
        }
        lines.push(line);
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
