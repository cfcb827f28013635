//! Modals: help, errors, the PIN prompt, confirmations and forms.

use super::{centered, fit};
use crate::prompt::SecretKind;
use crate::tui::keymap;
use crate::tui::state::{Field, FieldKind, Modal, State};
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

pub fn render(frame: &mut Frame, area: Rect, modal: &Modal, state: &State, theme: &Theme) {
    match modal {
        Modal::Help => help(frame, area, state, theme),
        Modal::Error { title, message } => {
            let mut lines: Vec<Line> = message.lines().map(|l| Line::from(l.to_owned())).collect();
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled("Enter or Esc closes", theme.dim())));
            boxed(frame, area, title, lines, theme.bad(), 70, theme);
        }
        Modal::Info { title, lines } => {
            let mut out: Vec<Line> = lines
                .iter()
                .map(|l| {
                    if l.starts_with("WARNING") {
                        Line::from(Span::styled(l.clone(), theme.warn()))
                    } else {
                        Line::from(l.clone())
                    }
                })
                .collect();
            out.push(Line::from(""));
            out.push(Line::from(Span::styled("Enter or Esc closes", theme.dim())));
            boxed(frame, area, title, out, theme.modal_border(), 90, theme);
        }
        Modal::Pin(p) => {
            let what = match p.prompt.kind {
                SecretKind::UserPin => format!("PIN for {}", p.prompt.token),
                SecretKind::SoPin if p.prompt.puk => format!("PUK for {}", p.prompt.token),
                SecretKind::SoPin => format!("SO PIN for {}", p.prompt.token),
                SecretKind::NewPuk => format!("New PUK for {}", p.prompt.token),
                SecretKind::NewUserPin => format!("New user PIN for {}", p.prompt.token),
                SecretKind::Passphrase => "Software keystore passphrase".to_string(),
                SecretKind::NewPassphrase => {
                    "New software keystore passphrase (8+ characters)".to_string()
                }
            };
            let mut lines = vec![Line::from(vec![
                Span::styled("token  ", theme.dim()),
                Span::styled(p.prompt.token.clone(), theme.key()),
            ])];
            if let Some(s) = &p.prompt.status {
                let style = if p.prompt.risky {
                    theme.bad()
                } else {
                    theme.ok()
                };
                lines.push(Line::from(vec![
                    Span::styled("status ", theme.dim()),
                    Span::styled(s.clone(), style),
                ]));
            }
            if p.prompt.risky {
                lines.push(Line::from(Span::styled(
                    "A wrong PIN now may lock this token.",
                    theme.bad(),
                )));
            }
            lines.push(Line::from(""));
            let labels = if p.fields.len() == 2 {
                ["new    ", "repeat "]
            } else {
                ["secret ", ""]
            };
            for (i, n) in p.lengths().into_iter().enumerate() {
                let focused = i == p.focus;
                let mask: String = "•".repeat(n.min(40));
                lines.push(Line::from(vec![
                    Span::styled(labels[i].to_string(), theme.dim()),
                    Span::styled(
                        format!("[{mask}{}]", if focused { "▏" } else { " " }),
                        if focused { theme.key() } else { theme.base() },
                    ),
                ]));
            }
            if let Some(e) = &p.error {
                lines.push(Line::from(Span::styled(e.clone(), theme.bad())));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "Enter submits · Esc cancels · never stored, wiped on close",
                theme.dim(),
            )));
            boxed(frame, area, &what, lines, theme.modal_border(), 64, theme);
        }
        Modal::Confirm(c) => {
            let mut lines = vec![Line::from(c.question.clone()), Line::from("")];
            if let Some(l) = &c.loses {
                lines.push(Line::from(vec![
                    Span::styled("What is at stake: ", theme.bad()),
                    Span::raw(l.clone()),
                ]));
                lines.push(Line::from(""));
            }
            lines.push(Line::from(vec![
                Span::styled("y", theme.key()),
                Span::raw(" yes   "),
                Span::styled("n", theme.key()),
                Span::raw(" / Esc no"),
            ]));
            boxed(frame, area, &c.title, lines, theme.warn(), 70, theme);
        }
        Modal::Form(f) => {
            let mut lines = Vec::new();
            let lw = f
                .fields
                .iter()
                .map(|x| x.label.chars().count())
                .max()
                .unwrap_or(0)
                + 2;
            for (i, field) in f.fields.iter().enumerate() {
                lines.push(field_line(field, i == f.focus, lw, theme));
            }
            if let Some(n) = &f.note {
                lines.push(Line::from(""));
                lines.push(Line::from(Span::styled(n.clone(), theme.dim())));
            }
            if let Some(e) = &f.error {
                lines.push(Line::from(Span::styled(e.clone(), theme.bad())));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                "Tab next field · ←/→ change · Enter submit · Esc cancel",
                theme.dim(),
            )));
            boxed(
                frame,
                area,
                &f.title,
                lines,
                theme.modal_border(),
                72,
                theme,
            );
        }
    }
}

fn field_line<'a>(field: &'a Field, focused: bool, lw: usize, theme: &Theme) -> Line<'a> {
    let label = Span::styled(format!("{:<lw$}", field.label), theme.dim());
    let style = if focused { theme.key() } else { theme.base() };
    let value = match &field.kind {
        FieldKind::Text { value } => {
            format!("[{}{}]", fit(value, 48), if focused { "▏" } else { " " })
        }
        FieldKind::Choice { options, index } => format!(
            "‹ {} ›{}",
            options.get(*index).map(String::as_str).unwrap_or(""),
            if options.len() > 1 {
                format!("  ({}/{})", index + 1, options.len())
            } else {
                String::new()
            }
        ),
        FieldKind::Toggle { on } => (if *on { "[x]" } else { "[ ]" }).to_string(),
    };
    let marker = if focused { "› " } else { "  " };
    Line::from(vec![
        Span::styled(marker, theme.key()),
        label,
        Span::styled(value, style),
    ])
}

fn help(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let mut lines = vec![Line::from(Span::styled(
        format!("{} screen", state.tab.title()),
        theme.header(),
    ))];
    let row = |(k, what): &(&str, &str)| {
        Line::from(vec![
            Span::styled(format!("  {k:<20}"), theme.key()),
            Span::raw(what.to_string()),
        ])
    };
    lines.extend(keymap::screen(state.tab).iter().map(row));
    let tall = lines.len() + keymap::GLOBAL.len() + keymap::MODAL.len() + 4;
    if tall + 2 <= area.height as usize {
        for (title, b) in [
            ("Everywhere", keymap::GLOBAL),
            ("In dialogs", keymap::MODAL),
        ] {
            lines.push(Line::from(Span::styled(title, theme.header())));
            lines.extend(b.iter().map(row));
        }
        boxed(
            frame,
            area,
            "Key bindings",
            lines,
            theme.modal_border(),
            68,
            theme,
        );
        return;
    }
    // A short terminal: this screen's bindings on the left, the shared ones on the right.
    let half = (area.width.saturating_sub(8) / 2).clamp(20, 48) as usize;
    let cell = |k: &str, what: &str, kw: usize| -> Vec<Span<'static>> {
        vec![
            Span::styled(format!(" {:<kw$}", fit(k, kw - 1)), theme.key()),
            Span::raw(format!(
                "{:<w$}",
                fit(what, half - kw - 2),
                w = half - kw - 1
            )),
        ]
    };
    let header = |t: &str| vec![Span::styled(format!("{t:<half$}"), theme.header())];
    let mut left = vec![header(&format!("{} screen", state.tab.title()))];
    left.extend(keymap::screen(state.tab).iter().map(|(k, w)| cell(k, w, 6)));
    let mut right = vec![header("Everywhere")];
    right.extend(keymap::GLOBAL.iter().map(|(k, w)| cell(k, w, 12)));
    right.push(header("In dialogs"));
    right.extend(keymap::MODAL.iter().map(|(k, w)| cell(k, w, 12)));
    let n = left.len().max(right.len());
    let blank = || vec![Span::raw(" ".repeat(half))];
    let rows: Vec<Line> = (0..n)
        .map(|i| {
            let mut spans = left.get(i).cloned().unwrap_or_else(blank);
            spans.push(Span::raw(" "));
            spans.extend(right.get(i).cloned().unwrap_or_default());
            Line::from(spans)
        })
        .collect();
    boxed(
        frame,
        area,
        "Key bindings",
        rows,
        theme.modal_border(),
        (half * 2 + 6) as u16,
        theme,
    );
}

fn boxed(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    lines: Vec<Line>,
    border: ratatui::style::Style,
    width: u16,
    theme: &Theme,
) {
    let w = width.min(area.width.saturating_sub(2)).max(20);
    let inner_w = w.saturating_sub(4).max(1) as usize;
    // Lines wrap at word boundaries: count the rows they take.
    let rows: usize = lines.iter().map(|l| wrapped_rows(l, inner_w)).sum();
    let h = (rows as u16 + 2).min(area.height);
    let rect = centered(area, w, h);
    frame.render_widget(Clear, rect);
    let block = Block::bordered()
        .title(Span::styled(format!(" {title} "), theme.title()))
        .border_style(border);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let inner = Rect::new(
        inner.x + 1,
        inner.y,
        inner.width.saturating_sub(2),
        inner.height,
    );
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

/// Rows a line takes once wrapped at word boundaries into `width` columns (as `Wrap` does).
fn wrapped_rows(line: &Line, width: usize) -> usize {
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    let (mut rows, mut col) = (1, 0usize);
    for word in text.split(' ') {
        let w = Span::raw(word).width();
        let need = if col == 0 { w } else { col + 1 + w };
        if need <= width {
            col = need;
        } else if w <= width {
            rows += 1;
            col = w;
        } else {
            // A word longer than a row is broken across rows.
            let first = width.saturating_sub(if col == 0 { 0 } else { col + 1 });
            let rest = w.saturating_sub(first);
            rows += rest.div_ceil(width.max(1));
            col = rest % width.max(1);
        }
    }
    rows
}
