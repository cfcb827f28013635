//! The tab bar, the jobs line and the status line.

use super::fit;
use crate::tui::state::{Load, State, Tab};
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

const BRAND: &str = " keyward ";
pub const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Each tab with its first column and width on the tab bar.
pub fn tab_spans() -> Vec<(Tab, u16, u16)> {
    let mut x = BRAND.chars().count() as u16 + 1;
    Tab::ALL
        .iter()
        .map(|t| {
            let w = format!(" {} {} ", t.index() + 1, t.title()).chars().count() as u16;
            let span = (*t, x, w);
            x += w + 1;
            span
        })
        .collect()
}

pub fn tabs(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let mut spans = vec![Span::styled(BRAND, theme.title()), Span::raw(" ")];
    for t in Tab::ALL {
        let label = format!(" {} {} ", t.index() + 1, t.title());
        let style = if t == state.tab {
            theme.tab_active()
        } else {
            theme.base()
        };
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    // The longest hint that fits.
    let width = area.width as usize;
    if let Some(right) = [" ? help  q quit ", " ? help "]
        .into_iter()
        .find(|r| used + r.chars().count() < width)
    {
        spans.push(Span::raw(" ".repeat(width - used - right.chars().count())));
        spans.push(Span::styled(right, theme.dim()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Running jobs (with a spinner and progress), else the last message.
pub fn jobs(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let w = area.width as usize;
    let running: Vec<_> = state.user_jobs().collect();
    let line = if let Some((_, j)) = running.last() {
        let spin = SPINNER[(state.tick as usize) % SPINNER.len()];
        let mut text = format!(" {spin} {}", j.job.label());
        if let Some(p) = &j.progress {
            text.push_str(&format!(": {p}"));
        }
        if running.len() > 1 {
            text.push_str(&format!(" (+{} more)", running.len() - 1));
        }
        text.push_str("  · x cancels");
        Line::from(Span::styled(fit(&text, w), theme.warn()))
    } else if let Some(m) = &state.message {
        Line::from(Span::styled(fit(&format!(" {m}"), w), theme.ok()))
    } else {
        Line::from("")
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// Home directory, token count, last error.
pub fn status(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let w = area.width as usize;
    let tokens = match &state.tokens.load {
        Load::Loading if state.tokens.entries.is_empty() => "tokens: …".to_string(),
        _ => {
            let n = state.tokens.entries.len();
            format!("{n} token{}", if n == 1 { "" } else { "s" })
        }
    };
    let left = format!(" home {} │ {tokens} │ ", state.home);
    let mut spans = vec![Span::styled(left.clone(), theme.dim())];
    let rest = w.saturating_sub(left.chars().count());
    match &state.last_error {
        Some(e) => spans.push(Span::styled(
            fit(&format!("error: {}", first_line(e)), rest),
            theme.bad(),
        )),
        None => spans.push(Span::styled(fit("no errors", rest), theme.dim())),
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
