//! Tokens: the software keystore, configured and discovered PKCS#11 tokens, with PIN status
//! and protection.

use super::{col, fit};
use crate::token::PinStatus;
use crate::tui::state::{Load, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// List, detail.
pub fn areas(body: Rect) -> [Rect; 2] {
    Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body)
}

pub fn pin_style(theme: &Theme, pin: &PinStatus) -> Style {
    if pin.locked {
        theme.bad()
    } else if pin.final_try || pin.tries_left == Some(1) || pin.count_low {
        theme.warn()
    } else if pin.not_initialized {
        theme.dim()
    } else {
        theme.ok()
    }
}

pub fn render(frame: &mut Frame, body: Rect, state: &State, theme: &Theme) {
    let [list, detail] = areas(body);
    let view = &state.tokens;
    let block = Block::bordered()
        .title(Span::styled(" Tokens ", theme.title()))
        .title_bottom(Span::styled(
            " i init token · YubiKey: c PIN C PUK u unblock m mgmt n retries X reset ",
            theme.dim(),
        ))
        .border_style(theme.border());
    let inner = block.inner(list);
    frame.render_widget(block, list);
    let w = inner.width as usize;
    // name, kind, model, serial, pin, protection
    let (nw, kw, mw, sw, pw) = if w >= 100 {
        (20, 7, 22, 18, 16)
    } else {
        (11, 7, 15, 13, 14)
    };
    let mut lines = vec![Line::from(Span::styled(
        fit(
            &format!(
                "{}{}{}{}{}{}",
                col("NAME", nw),
                col("KIND", kw),
                col("MODEL", mw),
                col("SERIAL", sw),
                col("PIN", pw),
                "PROTECTION"
            ),
            w,
        ),
        theme.header(),
    ))];
    match (&view.load, view.entries.is_empty()) {
        (Load::Loading, true) => {
            lines.push(Line::from(Span::styled("looking for tokens…", theme.dim())))
        }
        (Load::Failed(e), true) => lines.push(Line::from(Span::styled(fit(e, w), theme.bad()))),
        _ => {}
    }
    let rows = (inner.height as usize).saturating_sub(1);
    let start = view.cursor.window_start(view.entries.len(), rows);
    for (i, t) in view.entries.iter().enumerate().skip(start).take(rows) {
        let selected = i == view.cursor.selected;
        let mut spans = vec![
            Span::raw(col(&t.name, nw)),
            Span::raw(col(&t.kind.to_string(), kw)),
        ];
        match &t.info {
            Some(info) => {
                spans.push(Span::raw(col(&info.model, mw)));
                spans.push(Span::raw(col(&info.serial, sw)));
                spans.push(Span::styled(
                    col(&info.pin.describe(), pw),
                    pin_style(theme, &info.pin),
                ));
                if info.hardware {
                    spans.push(Span::styled(" hardware ", theme.hw_badge()));
                } else {
                    spans.push(Span::styled(" SOFTWARE ", theme.soft_badge()));
                }
            }
            None => spans.push(Span::styled(
                fit(
                    &format!(
                        "unavailable: {}",
                        t.error.as_deref().unwrap_or("cannot open")
                    ),
                    w.saturating_sub(nw + kw),
                ),
                theme.bad(),
            )),
        }
        let mut line = Line::from(spans);
        if selected {
            line = line.style(theme.selected());
        }
        lines.push(line);
    }
    frame.render_widget(Paragraph::new(lines), inner);

    // Detail of the selected token.
    let block = Block::bordered()
        .title(Span::styled(" Token ", theme.title()))
        .border_style(theme.border());
    let inner = block.inner(detail);
    frame.render_widget(block, detail);
    let Some(t) = view.entries.get(view.cursor.selected) else {
        frame.render_widget(
            Paragraph::new(Span::styled("no token selected", theme.dim())),
            inner,
        );
        return;
    };
    let label = |l: &str| Span::styled(format!("{l:<11}"), theme.dim());
    let mut lines = vec![Line::from(vec![
        label("name"),
        Span::styled(t.name.clone(), theme.key()),
        Span::styled(format!("  ({})", t.source), theme.dim()),
    ])];
    if let Some(info) = &t.info {
        let badge = if info.hardware {
            Span::styled(" hardware ", theme.hw_badge())
        } else {
            Span::styled(" software — not hardware protected ", theme.soft_badge())
        };
        lines.push(Line::from(vec![label("protection"), badge]));
        lines.push(Line::from(vec![
            label("PIN"),
            Span::styled(info.pin.describe(), pin_style(theme, &info.pin)),
            Span::styled(
                if info.pin.locked {
                    "  — unlock with the SO PIN or PUK"
                } else {
                    ""
                },
                theme.bad(),
            ),
        ]));
        if let Some(n) = info.puk_tries_left {
            lines.push(Line::from(vec![
                label("PUK"),
                Span::styled(
                    format!("{n} tries left"),
                    if n == 0 {
                        theme.bad()
                    } else if n == 1 {
                        theme.warn()
                    } else {
                        theme.ok()
                    },
                ),
            ]));
        }
        for w in &info.warnings {
            lines.push(Line::from(vec![
                label("WARNING"),
                Span::styled(w.clone(), theme.bad()),
            ]));
        }
        lines.push(Line::from(vec![
            label("model"),
            Span::raw(format!(
                "{} {} (firmware {})",
                info.manufacturer, info.model, info.firmware
            )),
        ]));
        lines.push(Line::from(vec![
            label("label"),
            Span::raw(format!("{}   serial {}", info.label, info.serial)),
        ]));
        lines.push(Line::from(vec![
            label("algorithms"),
            Span::raw(
                info.algorithms
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ]));
    }
    if let Some(m) = &t.module {
        lines.push(Line::from(vec![label("module"), Span::raw(m.clone())]));
    }
    if let Some(e) = &t.error {
        lines.push(Line::from(vec![
            label("error"),
            Span::styled(e.clone(), theme.bad()),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
