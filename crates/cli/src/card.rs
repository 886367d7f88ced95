//! The status as a terminal card: the colour as a block, the dates, and a
//! QR code of the colour and its validity — what a venue's door scanner
//! reads. The code carries no identity and no reason, only
//! `GREENLIGHT:1:<COLOUR>:<date shown>:<green again on>`; it is a
//! display of the phone's own decision, not a certificate (SPEC §13).

use greenlight_daemon::api::StatusView;
use greenlight_protocol::Colour;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// The text the QR code carries.
pub fn qr_payload(view: &StatusView) -> String {
    let colour = match view.colour {
        Colour::Green => "GREEN",
        Colour::Yellow => "YELLOW",
        Colour::Red => "RED",
    };
    let until = view
        .green_on
        .map_or_else(|| "-".to_owned(), |d| d.to_string());
    format!("GREENLIGHT:1:{colour}:{}:{until}", view.today)
}

/// ANSI background colour of a status.
fn ansi(colour: Colour) -> &'static str {
    match colour {
        Colour::Green => "\x1b[42;30m",
        Colour::Yellow => "\x1b[43;30m",
        Colour::Red => "\x1b[41;97m",
    }
}

/// The card: a coloured banner (plain text when `ansi_colours` is off),
/// the dates, and the QR code drawn with half blocks.
pub fn render(view: &StatusView, ansi_colours: bool) -> String {
    let label = match view.colour {
        Colour::Green => "GREEN",
        Colour::Yellow => "YELLOW — home quarantine",
        Colour::Red => "RED — quarantine",
    };
    let banner = format!("   {label:<32}");
    let mut out = String::new();
    if ansi_colours {
        out.push_str(&format!("{}{banner}\x1b[0m\n", ansi(view.colour)));
    } else {
        out.push_str(&format!("[{}]\n", banner.trim_end()));
    }
    out.push_str(&format!("   shown on {}\n", view.today));
    if let Some(d) = view.green_on {
        out.push_str(&format!("   green again on {d} with daily check-ins\n"));
    }
    match QrCode::new(qr_payload(view).as_bytes()) {
        Ok(code) => {
            out.push('\n');
            out.push_str(
                &code
                    .render::<Dense1x2>()
                    .dark_color(Dense1x2::Light)
                    .light_color(Dense1x2::Dark)
                    .quiet_zone(true)
                    .build(),
            );
            out.push('\n');
        }
        Err(e) => out.push_str(&format!("   (no QR code: {e})\n")),
    }
    out
}
