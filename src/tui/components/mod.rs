//! Components: short-lived widgets that borrow the state and draw it. No component changes
//! the state or does I/O; lists render only their visible window.

pub mod audit;
pub mod ceremony;
pub mod chrome;
pub mod images;
pub mod keys;
pub mod modal;
pub mod tokens;

use crate::tui::state::{State, Tab};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::Frame;

/// Draws the whole console.
pub fn render(frame: &mut Frame, state: &State) {
    let theme = Theme::new(state.no_color);
    let area = frame.area();
    let [top, body, jobs, status] = chrome_areas(area);
    chrome::tabs(frame, top, state, &theme);
    match state.tab {
        Tab::Tokens => tokens::render(frame, body, state, &theme),
        Tab::Keys => keys::render(frame, body, state, &theme),
        Tab::Images => images::render(frame, body, state, &theme),
        Tab::Audit => audit::render(frame, body, state, &theme),
        Tab::Ceremony => ceremony::render(frame, body, state, &theme),
    }
    chrome::jobs(frame, jobs, state, &theme);
    chrome::status(frame, status, state, &theme);
    for m in &state.modals {
        modal::render(frame, area, m, state, &theme);
    }
}

/// Tab bar, body, jobs line, status line.
pub fn chrome_areas(area: Rect) -> [Rect; 4] {
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area)
}

fn size_rect(size: (u16, u16)) -> Rect {
    Rect::new(0, 0, size.0, size.1)
}

/// Rows of items the current screen's list shows at this terminal size (for paging and
/// keeping the selection in view).
pub fn list_rows(tab: Tab, size: (u16, u16)) -> usize {
    let [_, body, _, _] = chrome_areas(size_rect(size));
    let list = match tab {
        Tab::Tokens => tokens::areas(body)[0],
        Tab::Keys => keys::areas(body)[0],
        Tab::Images => images::areas(body)[0],
        Tab::Audit => audit::areas(body)[1],
        Tab::Ceremony => ceremony::areas(body)[0],
    };
    // A border above and below, and the header row.
    (list.height as usize).saturating_sub(3).max(1)
}

/// The tab under a click on the tab bar.
pub fn tab_at(col: u16) -> Option<Tab> {
    chrome::tab_spans()
        .into_iter()
        .find(|(_, start, len)| col >= *start && col < start + len)
        .map(|(t, _, _)| t)
}

/// `s` cut to `width` characters, with an ellipsis when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// `s` padded or cut to exactly `width` characters.
pub fn pad(s: &str, width: usize) -> String {
    let f = fit(s, width);
    let n = f.chars().count();
    format!("{f}{}", " ".repeat(width.saturating_sub(n)))
}

/// A table cell: `s` cut to `width - 1` characters and padded, then one space.
pub fn col(s: &str, width: usize) -> String {
    format!("{} ", pad(s, width.saturating_sub(1)))
}

/// A short age: `now`, `5m`, `3h`, `2d`, `7w`, `2y`.
pub fn age(now: i64, then: i64) -> String {
    if then <= 0 {
        return "?".into();
    }
    let s = (now - then).max(0);
    match s {
        0..=59 => "now".into(),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        86_400..=1_209_599 => format!("{}d", s / 86_400),
        1_209_600..=31_535_999 => format!("{}w", s / 604_800),
        _ => format!("{}y", s / 31_536_000),
    }
}

/// A rectangle of `w` x `h` centred in `area` (clamped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}
