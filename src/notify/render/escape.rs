//! Escaping for each place a string from an event or the CRM ends up: Slack mrkdwn and
//! links, HTML, and URLs (percent-encoded, `https:` only); and cutting text to a limit
//! without breaking an escape or a link.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Slack mrkdwn: `&`, `<` and `>` are the control characters
/// (<https://api.slack.com/reference/surfaces/formatting#escaping>); anything else is
/// shown as written. Control characters are replaced by spaces, so a value cannot
/// start a new line of its own.
pub fn slack(t: &str) -> String {
    replace_chars(t, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        c if c.is_control() => Some(" "),
        _ => None,
    })
}

/// `t` with each character `with` names replaced by what it gives.
fn replace_chars(t: &str, with: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match with(c) {
            Some(r) => out.push_str(r),
            None => out.push(c),
        }
    }
    out
}

/// The label of a Slack link `<url|label>`: escaped, and `|` (the separator) replaced
/// by a look-alike so a label can never carry a second label or URL.
pub fn slack_label(t: &str) -> String {
    slack(t).replace('|', "\u{00a6}")
}

/// A Slack link; `url` must come from [`safe_link`] or [`link_from_template`].
pub fn slack_link(url: &str, label: &str) -> String {
    format!("<{}|{}>", url.replace('|', "%7C"), slack_label(label))
}

/// HTML text and attribute values.
pub fn html(t: &str) -> String {
    replace_chars(t, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        c if c.is_control() && c != '\n' => Some(" "),
        _ => None,
    })
}

/// Plain text for a person (email text part, subjects): control characters replaced by
/// spaces so no value can forge a line or a header.
pub fn plain(t: &str) -> String {
    t.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Everything but RFC 3986's unreserved characters is percent-encoded in an id placed
/// in a URL path, so an id can neither leave its path segment (`../`, `?`, `#`) nor
/// end a Slack link (`|`, `>`).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encodes a value for one URL path segment or query value.
pub fn url_component(v: &str) -> String {
    utf8_percent_encode(v, PATH_SEGMENT).to_string()
}

/// A link taken from untrusted metadata, if it is an absolute `https:` URL with a host
/// and no credentials; returned normalised (spaces, quotes and angle brackets encoded).
pub fn safe_link(raw: &str) -> Option<String> {
    let u = url::Url::parse(raw.trim()).ok()?;
    (u.scheme() == "https"
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none())
    .then(|| u.to_string().replace('|', "%7C"))
}

/// `template` with `{account_id}` replaced by the percent-encoded id, if the result is a
/// safe link (see [`safe_link`]).
pub fn link_from_template(template: &str, account_id: &str) -> Option<String> {
    if template.is_empty() {
        return None;
    }
    safe_link(&template.replace("{account_id}", &url_component(account_id)))
}

/// At most `max` characters of `t`, the last one an ellipsis when cut.
pub fn cut(t: &str, max: usize) -> String {
    if t.chars().count() <= max {
        return t.to_string();
    }
    let mut out: String = t.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// At most `max` characters of Slack mrkdwn (or HTML) that this module escaped: a cut
/// never splits an entity (`&amp;`) or a `<...>` construct (link, mention); the
/// ellipsis counts.
pub fn cut_markup(t: &str, max: usize) -> String {
    if t.chars().count() <= max {
        return t.to_string();
    }
    let end = t
        .char_indices()
        .nth(max.saturating_sub(1))
        .map_or(t.len(), |(i, _)| i);
    let mut kept = &t[..end];
    if let Some(open) = kept.rfind('<') {
        if !kept[open..].contains('>') {
            kept = &kept[..open];
        }
    }
    if let Some(amp) = kept.rfind('&') {
        if !kept[amp..].contains(';') {
            kept = &kept[..amp];
        }
    }
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slack_escapes_controls_and_labels_cannot_split() {
        assert_eq!(slack("<!channel> & co"), "&lt;!channel&gt; &amp; co");
        assert_eq!(slack("a\nb"), "a b");
        assert_eq!(
            slack_link("https://crm.example/x", "x|Pay at evil.example"),
            "<https://crm.example/x|x\u{00a6}Pay at evil.example>"
        );
    }

    #[test]
    fn links_are_https_and_ids_stay_in_their_segment() {
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link("http://crm.example/a"), None);
        assert_eq!(safe_link("https://user:pw@crm.example/a"), None);
        assert_eq!(safe_link("data:text/html,hi"), None);
        assert_eq!(
            safe_link("https://crm.example/a b\"<x>").as_deref(),
            Some("https://crm.example/a%20b%22%3Cx%3E")
        );
        assert_eq!(
            link_from_template(
                "https://crm.example/accounts/{account_id}",
                "../../admin/delete?x="
            )
            .as_deref(),
            Some("https://crm.example/accounts/..%2F..%2Fadmin%2Fdelete%3Fx%3D")
        );
        assert_eq!(
            link_from_template("https://crm.example/a/{account_id}", "x|Your invoice").as_deref(),
            Some("https://crm.example/a/x%7CYour%20invoice")
        );
        assert_eq!(link_from_template("", "x"), None);
    }

    #[test]
    fn cutting_markup_keeps_entities_and_links_whole() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut_markup("ab &amp; cd", 5), "ab …");
        assert_eq!(cut_markup("ab <https://x|y> cd", 8), "ab …");
        assert_eq!(cut_markup("ab <https://x|y> cd", 17), "ab <https://x|y>…");
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_raw_controls(s in any::<String>()) {
            let e = slack(&s);
            prop_assert!(!e.contains('<') && !e.contains('>') && !e.chars().any(char::is_control));
            let h = html(&s);
            prop_assert!(!h.contains('<') && !h.contains('"') && !h.contains('\''));
            let l = slack_label(&s);
            prop_assert!(!l.contains('|'));
        }

        #[test]
        fn cut_markup_respects_the_limit(s in any::<String>(), max in 1usize..200) {
            let t = cut_markup(&slack(&s), max);
            prop_assert!(t.chars().count() <= max);
            // An entity is never split: every & starts a whole entity.
            for (i, _) in t.match_indices('&') {
                let rest = &t[i..];
                prop_assert!(rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"));
            }
        }

        #[test]
        fn template_links_never_leave_the_segment(id in any::<String>()) {
            if let Some(l) = link_from_template("https://crm.example/a/{account_id}", &id) {
                prop_assert!(l.starts_with("https://crm.example/a/"));
                let rest = &l["https://crm.example/a/".len()..];
                prop_assert!(!rest.contains('/') && !rest.contains('?') && !rest.contains('#') && !rest.contains('|') && !rest.contains('>'));
            }
        }
    }
}
