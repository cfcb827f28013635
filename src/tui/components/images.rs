//! Images: sign image references with a key (progress per image, a summary, failures with
//! their reason) and verify an image (who signed it, provenance annotations).

use super::{col, fit};
use crate::tui::state::{ImageStatus, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// Signing results, verification.
pub fn areas(body: Rect) -> [Rect; 2] {
    Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body)
}

pub fn render(frame: &mut Frame, body: Rect, state: &State, theme: &Theme) {
    let [list, verify] = areas(body);
    let view = &state.images;
    let title = match &view.key {
        Some(k) => format!(" Image signatures with {k} "),
        None => " Image signatures ".into(),
    };
    let block = Block::bordered()
        .title(Span::styled(title, theme.title()))
        .title_bottom(Span::styled(
            " s sign images · v verify an image ",
            theme.dim(),
        ))
        .border_style(theme.border());
    let inner = block.inner(list);
    frame.render_widget(block, list);
    let w = inner.width as usize;
    let iw = (w / 2).max(20);
    let dw = 20;
    let mut lines = vec![Line::from(Span::styled(
        fit(
            &format!("{}{}STATUS", col("IMAGE", iw), col("DIGEST", dw)),
            w,
        ),
        theme.header(),
    ))];
    if view.rows.is_empty() {
        lines.push(Line::from(Span::styled(
            "Press s to sign one or many image references (cosign format, pushed to the registry)",
            theme.dim(),
        )));
        lines.push(Line::from(Span::styled(
            "with a key on its token; v verifies an image and shows who signed it.",
            theme.dim(),
        )));
    }
    let rows = (inner.height as usize).saturating_sub(2);
    let start = view.cursor.window_start(view.rows.len(), rows);
    for (i, r) in view.rows.iter().enumerate().skip(start).take(rows) {
        let (status, style) = match &r.status {
            ImageStatus::Queued => ("queued".to_string(), theme.dim()),
            ImageStatus::Resolved => ("resolved, signing…".to_string(), theme.warn()),
            ImageStatus::Signed => ("signed, pushing…".to_string(), theme.warn()),
            ImageStatus::Done => ("✔ signed and recorded".to_string(), theme.ok()),
            ImageStatus::Failed(why) => (format!("✘ {why}"), theme.bad()),
        };
        let digest = r
            .digest
            .as_deref()
            .map(|d| fit(d, dw - 1))
            .unwrap_or_default();
        let mut line = Line::from(vec![
            Span::raw(col(&r.image, iw)),
            Span::styled(col(&digest, dw), theme.dim()),
            Span::styled(fit(&status, w.saturating_sub(iw + dw)), style),
        ]);
        if i == view.cursor.selected {
            line = line.style(theme.selected());
        }
        lines.push(line);
    }
    if let Some((ok, failed)) = view.summary {
        lines.push(Line::from(vec![
            Span::styled(format!("{ok} signed"), theme.ok()),
            Span::raw(", "),
            Span::styled(
                format!("{failed} failed"),
                if failed > 0 { theme.bad() } else { theme.dim() },
            ),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);

    let block = Block::bordered()
        .title(Span::styled(" Verification ", theme.title()))
        .border_style(theme.border());
    let inner = block.inner(verify);
    frame.render_widget(block, verify);
    let mut lines = Vec::new();
    match &view.verification {
        None => lines.push(Line::from(Span::styled(
            "v verifies an image: every signature, the key that made it, its annotations",
            theme.dim(),
        ))),
        Some(v) => {
            lines.push(Line::from(vec![
                Span::styled(v.image.clone(), theme.key()),
                Span::styled(format!("  {}", v.digest), theme.dim()),
            ]));
            if v.signers.is_empty() {
                lines.push(Line::from(Span::styled("no signatures", theme.bad())));
            }
            for s in &v.signers {
                lines.push(Line::from(vec![
                    if s.verified {
                        Span::styled("✔ ", theme.ok())
                    } else {
                        Span::styled("✘ ", theme.bad())
                    },
                    Span::raw(format!("key id {}  ", fit(&s.key_id, 16))),
                    Span::styled(s.note.clone(), theme.dim()),
                ]));
                for (k, val) in &s.annotations {
                    lines.push(Line::from(Span::styled(
                        format!("    {k} = {val}"),
                        theme.dim(),
                    )));
                }
            }
        }
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
