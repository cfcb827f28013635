//! Keys: every key version with state, algorithm, token, age and key id; a detail pane with
//! the public key and the key's audit history.

use super::{age, col, fit};
use crate::tui::state::{Load, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

/// Side by side when the terminal is wide, else stacked.
pub fn areas(body: Rect) -> [Rect; 2] {
    if body.width >= 140 {
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body)
    } else {
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body)
    }
}

pub fn render(frame: &mut Frame, body: Rect, state: &State, theme: &Theme) {
    let [list, detail] = areas(body);
    let view = &state.keys;
    let n = view.versions.len();
    let block = Block::bordered()
        .title(Span::styled(
            format!(" Keys ({n} version{}) ", if n == 1 { "" } else { "s" }),
            theme.title(),
        ))
        .title_bottom(Span::styled(
            if list.width >= 110 {
                " g generate · a activate · t state · R rotate · S re-sign · b bundle · p policy · D destroy · ? more "
            } else {
                " g generate · t state · R rotate · S re-sign · b bundle · ? more "
            },
            theme.dim(),
        ))
        .border_style(theme.border());
    let inner = block.inner(list);
    frame.render_widget(block, list);
    let w = inner.width as usize;
    let (vw, stw, aw, tw, gw, dw) = (22, 12, 8, 12, 5, 14);
    let mut lines = vec![Line::from(Span::styled(
        fit(
            &format!(
                "{}{}{}{}{}{}KEY ID",
                col("VERSION", vw),
                col("STATE", stw),
                col("ALG", aw),
                col("TOKEN", tw),
                col("AGE", gw),
                col("DUE", dw)
            ),
            w,
        ),
        theme.header(),
    ))];
    match &view.load {
        Load::Loading if n == 0 => {
            lines.push(Line::from(Span::styled("loading keys…", theme.dim())))
        }
        Load::Failed(e) if n == 0 => lines.push(Line::from(Span::styled(fit(e, w), theme.bad()))),
        _ if n == 0 => lines.push(Line::from(Span::styled(
            "no keys yet — press g to generate one",
            theme.dim(),
        ))),
        _ => {}
    }
    let rows = (inner.height as usize).saturating_sub(1);
    let start = view.cursor.window_start(n, rows);
    let idw = w.saturating_sub(vw + stw + aw + tw + gw + dw).min(64);
    for i in start..(start + rows).min(n) {
        let v = &view.versions[i];
        let created = view.created.get(i).copied().unwrap_or(0);
        let (due, due_style) = match view.due_of(v) {
            Some(d) => due_label(d, state.now, theme),
            None => (String::new(), theme.dim()),
        };
        let mut line = Line::from(vec![
            Span::raw(col(&format!("{}/{}", v.key, v.version), vw)),
            Span::styled(col(v.state.as_str(), stw), theme.state(v.state)),
            Span::raw(col(v.algorithm.as_str(), aw)),
            Span::raw(col(&v.token, tw)),
            Span::raw(col(&age(state.now, created), gw)),
            Span::styled(col(&due, dw), due_style),
            Span::styled(fit(&v.key_id, idw), theme.dim()),
        ]);
        if i == view.cursor.selected {
            line = line.style(theme.selected());
        }
        lines.push(line);
    }
    if rows > n && !view.pending.is_empty() {
        for p in view.pending.iter().take(rows - n) {
            lines.push(Line::from(Span::styled(
                fit(
                    &format!(
                        "{} pending: generation in progress or interrupted",
                        col(&format!("{}/{}", p.key, p.version), vw)
                    ),
                    w,
                ),
                theme.warn(),
            )));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
    render_detail(frame, detail, state, theme);
}

fn render_detail(frame: &mut Frame, area: Rect, state: &State, theme: &Theme) {
    let view = &state.keys;
    let Some(v) = view.selected() else {
        let block = Block::bordered()
            .title(Span::styled(" Version ", theme.title()))
            .border_style(theme.border());
        frame.render_widget(block, area);
        return;
    };
    let block = Block::bordered()
        .title(Span::styled(
            format!(" {}/{} ", v.key, v.version),
            theme.title(),
        ))
        .border_style(theme.border());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let label = |l: &str| Span::styled(format!("{l:<11}"), theme.dim());
    let soft = v.token == crate::token::soft::SOFT_TOKEN_NAME;
    let mut info = vec![
        Line::from(vec![
            label("state"),
            Span::styled(v.state.as_str(), theme.state(v.state)),
            Span::styled(
                format!(
                    "  since {} · created {}",
                    short_time(&v.updated),
                    short_time(&v.created)
                ),
                theme.dim(),
            ),
        ]),
        Line::from(vec![
            label("algorithm"),
            Span::raw(format!(
                "{} — {}",
                v.algorithm,
                v.algorithm.signature_scheme()
            )),
        ]),
        Line::from(vec![
            label("token"),
            Span::raw(format!("{}  serial {}", v.token, v.token_serial)),
            if soft {
                Span::styled("  software — not hardware protected ", theme.soft_badge())
            } else {
                Span::raw("")
            },
        ]),
        Line::from(vec![label("key id"), Span::raw(v.key_id.clone())]),
    ];
    let mut life = Vec::new();
    if let Some(t) = &v.activated {
        life.push(format!("activated {}", short_time(t)));
    }
    if let Some(t) = &v.deactivated {
        life.push(format!("deactivated {}", short_time(t)));
    }
    if !life.is_empty() {
        info.push(Line::from(vec![
            label("lifecycle"),
            Span::raw(life.join(" · ")),
        ]));
    }
    if let Some(t) = &v.compromised_since {
        info.push(Line::from(vec![
            label("compromise"),
            Span::styled(
                format!("not trusted for signatures since {}", short_time(t)),
                theme.bad(),
            ),
        ]));
    }
    info.push(Line::from(vec![
        label("policy"),
        match view.policies.get(&v.key) {
            Some(p) => Span::raw(format!(
                "rotate every {} · overlap {}",
                crate::keys::format_duration(p.rotate_every),
                crate::keys::format_duration(p.overlap)
            )),
            None => Span::styled("no rotation policy (p sets one)", theme.dim()),
        },
    ]));
    if let Some(d) = view.due_of(v) {
        let (short_label, style) = due_label(d, state.now, theme);
        let what = if d.action == "deactivate" {
            format!(
                "rotation overlap ends {}: then deactivated (d, or the next keyward run)",
                short_time(&d.due)
            )
        } else {
            format!("rotation due {} (R rotates)", short_time(&d.due))
        };
        info.push(Line::from(vec![
            label("due"),
            Span::styled(format!("{short_label} — {what}"), style),
        ]));
    }
    // The newest attestation of this version in the audit log (`A`, `token piv attest`).
    let attested = format!("attestation of {}/{} ", v.key, v.version);
    if let Some(r) = view
        .history
        .iter()
        .filter_map(|&i| state.audit.index.row(i as usize))
        .find(|r| state.audit.index.summary(r).starts_with(&attested))
    {
        let summary = state.audit.index.summary(r);
        let ok = !summary.contains("did NOT verify");
        info.push(Line::from(vec![
            label("attested"),
            Span::styled(
                format!(
                    "{} · checked {}",
                    summary.trim_start_matches(&attested),
                    state.audit.index.time(r)
                ),
                if ok { theme.ok() } else { theme.bad() },
            ),
        ]));
    }
    let pem: Vec<Line> = v
        .public_key
        .lines()
        .map(|l| Line::from(Span::styled(l.to_owned(), theme.base())))
        .collect();
    let mut history = vec![Line::from(Span::styled(
        "audit history (newest first)",
        theme.header(),
    ))];
    let idx = &state.audit.index;
    if view.history.is_empty() {
        history.push(Line::from(Span::styled(
            if state.audit.load == Load::Ready {
                "no entries"
            } else {
                "loading the audit log…"
            },
            theme.dim(),
        )));
    }
    for &i in &view.history {
        if let Some(r) = idx.row(i as usize) {
            history.push(Line::from(vec![
                Span::styled(format!("{:>7} ", r.seq), theme.dim()),
                Span::styled(format!("{} ", idx.time(r)), theme.dim()),
                Span::styled(
                    format!("{:<8}", r.outcome.to_string()),
                    theme.outcome(r.outcome),
                ),
                Span::raw(idx.summary(r).to_owned()),
            ]));
        }
    }
    // The PEM beside the details only when both fit whole.
    if inner.width >= 140 {
        let [left, right] =
            Layout::horizontal([Constraint::Min(40), Constraint::Length(66)]).areas(inner);
        info.push(Line::from(""));
        info.extend(history);
        frame.render_widget(Paragraph::new(info), left);
        frame.render_widget(Paragraph::new(pem), right);
    } else {
        info.extend(pem);
        info.extend(history);
        frame.render_widget(Paragraph::new(info), inner);
    }
}

fn short_time(t: &str) -> String {
    t.replacen('T', " ", 1).chars().take(19).collect()
}

/// The DUE column: time left before a rotation or the end of an overlap, or how overdue.
fn due_label(d: &crate::keys::Due, now: i64, theme: &Theme) -> (String, ratatui::style::Style) {
    let at = crate::tui::update::parse_time(&d.due);
    let left = age(at, now);
    let over = age(now, at);
    match (d.action, d.status) {
        ("deactivate", "overdue") => ("overlap ended".into(), theme.bad()),
        ("deactivate", _) => (format!("overlap {left}"), theme.warn()),
        (_, "overdue") => (format!("OVERDUE {over}"), theme.bad()),
        (_, "soon") => (format!("rotate in {left}"), theme.warn()),
        _ => (format!("rotate in {left}"), theme.dim()),
    }
}
