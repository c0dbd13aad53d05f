//! Email: invitations, verification and password-reset messages in plain text and HTML,
//! sent through SMTP (`lettre`). Without `SMTP_URL` a message is written to the log
//! instead, links included, so a development setup works without a mail server.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::teams::TeamSettings;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SMTP_URL: {0}")]
    Config(String),
    #[error("MAIL_FROM: not a valid address")]
    From,
    #[error("building the message: {0}")]
    Build(String),
    #[error("SMTP: {0}")]
    Send(String),
}

/// One message to one recipient.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// No SMTP server is configured; the message went to the log.
    Logged,
}

pub struct Mailer {
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(settings: &TeamSettings) -> Result<Self, MailError> {
        let from: Mailbox = settings.mail_from.parse().map_err(|_| MailError::From)?;
        let smtp = match settings.smtp_url() {
            None => None,
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    // The error text may quote the URL, which can hold a password.
                    .map_err(|_| MailError::Config("not a usable SMTP URL".into()))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
        };
        Ok(Self { smtp, from })
    }

    pub fn is_configured(&self) -> bool {
        self.smtp.is_some()
    }

    pub async fn send(&self, mail: Mail) -> Result<Delivery, MailError> {
        let Some(smtp) = &self.smtp else {
            tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.text,
                "email not sent (SMTP_URL is not set)");
            return Ok(Delivery::Logged);
        };
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
            .map_err(|e| MailError::Build(e.to_string()))?;
        smtp.send(message)
            .await
            .map_err(|e| MailError::Send(e.to_string()))?;
        Ok(Delivery::Sent)
    }
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(paragraphs: &[String], link: &str, button: &str) -> String {
    let body: String = paragraphs
        .iter()
        .map(|p| format!("<p>{}</p>\n", esc(p)))
        .collect();
    format!(
        "<!doctype html>\n<html><body style=\"font-family: sans-serif\">\n{body}\
         <p><a href=\"{href}\">{button}</a></p>\n\
         <p style=\"color: #666\">Or open this link: {text}</p>\n</body></html>\n",
        href = esc(link),
        button = esc(button),
        text = esc(link),
    )
}

fn text(paragraphs: &[String], link: &str) -> String {
    let mut out = paragraphs.join("\n\n");
    out.push_str("\n\n");
    out.push_str(link);
    out.push('\n');
    out
}

pub fn invitation(to: &str, workspace: &str, inviter: &str, role: &str, link: &str) -> Mail {
    let lines = vec![
        format!("{inviter} invited you to the workspace \"{workspace}\" on Perpetuo as {role}."),
        "Sign up or log in with this email address, then accept the invitation. The link works once and expires in 7 days.".to_string(),
    ];
    Mail {
        to: to.to_string(),
        subject: format!("You are invited to {workspace} on Perpetuo"),
        text: text(&lines, link),
        html: html(&lines, link, "Accept the invitation"),
    }
}

pub fn verification(to: &str, link: &str) -> Mail {
    let lines = vec![
        "Confirm that this address is yours to finish setting up your Perpetuo account."
            .to_string(),
    ];
    Mail {
        to: to.to_string(),
        subject: "Verify your email for Perpetuo".into(),
        text: text(&lines, link),
        html: html(&lines, link, "Verify my email"),
    }
}

pub fn password_reset(to: &str, link: &str) -> Mail {
    let lines = vec![
        "Someone asked to reset the password of your Perpetuo account. If it was you, choose a new password; the link works once and expires in one hour.".to_string(),
        "If it was not you, ignore this email: your password stays as it is.".to_string(),
    ];
    Mail {
        to: to.to_string(),
        subject: "Reset your Perpetuo password".into(),
        text: text(&lines, link),
        html: html(&lines, link, "Choose a new password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_users_typed() {
        let m = invitation(
            "b@example.com",
            "<script>x</script>",
            "a@example.com",
            "viewer",
            "http://h/#/invite?token=a&b",
        );
        assert!(m.html.contains("&lt;script&gt;"));
        assert!(!m.html.contains("<script>"));
        assert!(m.html.contains("token=a&amp;b"));
        assert!(m.text.contains("http://h/#/invite?token=a&b"));
    }
}
