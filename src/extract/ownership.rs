//! Whose value it is. A customer's message holds addresses and numbers that
//! are not theirs: the address a notice came from, a number quoted off a
//! screen, a colleague's email, the support address the bot just gave them.
//! Before a value found by the patterns is recorded as the customer's, the
//! words around it must make it theirs: a first-person statement ("my email
//! is", "reach me at", "… is my number"), a form-like label opening the
//! line ("email: …"), an answer to a question just asked for that field, or
//! a correction of a value they stated before. Values that belong to
//! someone else are dropped; the rest are [`Owner::Unclear`]: a model may
//! judge them from the conversation, the offline path does not write them.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::grounding::value_supported_by_quote;
use super::patterns::{about_someone_else, clause_start};
use crate::fields::FieldSet;

/// Whose a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The customer's own: record it.
    Customer,
    /// Nothing around it says: a model may decide, the patterns do not.
    Unclear,
    /// Someone else's, or a value the bot, an agent or a notice gave.
    Other,
}

/// What the conversation around a customer message says about its values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Surroundings<'a> {
    /// Fields the customer was asked for just before: by the bot's or an
    /// agent's question in the turn before the message, or by enricher's own
    /// open ask.
    pub asked: &'a [&'a str],
    /// What the bot, agents and the system said earlier in the conversation.
    pub said_by_others: &'a [&'a str],
    /// Fields whose value the customer stated before, which this message
    /// may correct.
    pub stated_before: &'a [&'a str],
}

/// Words before a value that give it to someone or something else: a
/// sender ("from"), a notice or screen that shows it ("it says", "the
/// letter"), a third person ("he's at"), an instruction to contact a third
/// party ("call the site manager on"), a named owner ("the seller's
/// number"), an agent ("made by", "referred by").
static OTHER_CUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:from|von|desde|depuis|dari|от)\b",
        r"|\b(?:says|said|saying|shows|showed|showing|reads|lists|listed|displays|displayed|",
        r"states|stated|prints|error|errors|notice|notification|letter|receipt|footer|website|",
        r"screen|label|packaging|ad|advert|advertisement|auto-?reply|bounce|pop-?up|banner|",
        r"dice|dec[ií]a|dit|disait|steht|stand|diz|dizia|tertulis|говорит|написано|сказано)\b",
        r"|\b(?:he|he['’]s|they['’]re|él|il|er|dia|он|она)\b",
        r"|\b(?:the|a|an|this|that|your|our)\s+[\p{L}\-]+(?:\s+[\p{L}\-]+)?['’]s\b",
        r"|\b(?:made|referred|sent|signed|booked|registered|recommended|owned|run)\s+by\b",
        r"|\bwho\s+(?:owns|is|has)\b"
    ))
    .expect("valid regex")
});

/// An instruction to contact a third party ("call the site manager on …");
/// the customer's own office or home is not one.
static CONTACT_THIRD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:call|ring|text|e-?mail|write\s+to|contact|reach|message|whatsapp)\s+",
        r"(?:the|our|your|their|this|that|a|an)\s+([\p{L}\-]+)"
    ))
    .expect("valid regex")
});

/// Places of the customer's own that "call the … on" may name.
const OWN_PLACES: &[&str] = &[
    "office", "house", "home", "landline", "shop", "store", "mobile", "cell",
];

/// Where the last cue before the end of `clause` that gives a value to
/// someone or something else ends.
fn other_cue_end(clause: &str) -> Option<usize> {
    let cue = OTHER_CUE.find_iter(clause).map(|m| m.end()).last();
    let contact = CONTACT_THIRD
        .captures_iter(clause)
        .filter(|c| {
            c.get(1)
                .is_some_and(|noun| !OWN_PLACES.contains(&noun.as_str().to_lowercase().as_str()))
        })
        .filter_map(|c| c.get(0).map(|m| m.end()))
        .last();
    cue.max(contact)
}

/// The customer speaking of themselves, in the languages the extractor reads.
static FIRST_PERSON_CUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:i|i['’]m|i['’]d|i['’]ve|i['’]ll|me|my|mine|myself|yo|mi|mis|m[ií]o|m[ií]a|meu|minha|",
        r"meus|minhas|eu|je|j['’]|moi|mon|ma|mes|ich|mich|mir|mein|meine|meinen|meinem|saya|aku|",
        r"io|mio|ik|mij|mijn|jag|mitt|mig|mój|moja|moje|mnie|benim|bana|beni|tôi|",
        r"я|мне|меня|мой|моя|моё|мои|мій|мене)\b",
        r"|\b(?:send|forward|kirim\w*|envi[aáeé]\w*|mand[ae]\w*|escr[ií]b\w*me)\b",
        r"|我的|我|私の|私|僕|제\s|저는|저의|내\s|मेरा|मेरी|मुझे|मैं|أنا|رقمي|بريدي"
    ))
    .expect("valid regex")
});

/// "… is my number", "…, mine": the value is claimed right after it.
static MINE_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?iu)^[\s,)\]]*(?:(?:is|are|=|-|–|—)\s*)?(?:my|mine)\b|^[\s,)\]]*(?:是我的|это\s+мой|мой)")
        .expect("valid regex")
});

/// A form-like label alone before the value on its line ("email: …",
/// "Tel. +49 …", "WhatsApp: …").
static LABEL_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)^[\W_]*(?:(?:e-?mail(?:\s+address)?|mail|address|phone(?:\s+number)?|",
        r"tel|tel[eé]fono|telefone|t[eé]l[eé]phone|telefon|handy|mobile|mob|cell|cellphone|",
        r"number|n[uú]mero|whatsapp|wa|contact|correo|courriel|nomor|hp|office|work|home|landline))",
        r"\s*(?:is|es|é|est|ist)?\s*[.:=\-]?\s*$",
        r"|(?:電話番号|電話|携帯|携帯番号|メール|メールアドレス|连络方式|电话|电话号码|手机|手机号|手机号码|邮箱|",
        r"전화번호|연락처|이메일)\s*(?:は|是|为|：|:|는|은)?\s*$"
    ))
    .expect("valid regex")
});

/// A request to be contacted earlier in the message ("call me back about
/// the roof? 312-555-0186"): the number or address that follows is where.
static CONTACT_ME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:call|ring|text|phone|reach|contact|email|e-mail|mail|send|write\s+to|whatsapp|message)\s+me\b",
        r"|\b(?:ll[aá]m\w*me|escr[ií]b\w*me|env[ií]\w*me|m[aá]nd\w*me|me\s+(?:ligue|liga|ligar|manda|mande|envie))\b"
    ))
    .expect("valid regex")
});

/// The customer introducing themselves right before the value: "Sofia
/// Reyes <sofia@…>", "Emily here (emily@…)".
static SELF_INTRODUCED_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?iu)^\W*\p{Lu}[\p{L}\p{M}'’\-]*(?:\s+[\p{L}\p{M}'’\-]+){0,3}\s*<$|\bhere\s*[(:,\-–—]?\s*$")
        .expect("valid regex")
});

/// What a message holding nothing but a value may say around it ("It's …",
/// "Here you go: …", "… thanks").
static BARE_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)^[\W_]*(?:(?:yes|yeah|yep|sure|ok|okay|here\s+you\s+go|here\s+it\s+is|here|it['’]?s|it\s+is|",
        r"it\s+was|that['’]s|this\s+is|s[ií]|sim|oui|ja|claro|es|é|c['’]est|hi|hello|hey)[\W_]*)*$"
    ))
    .expect("valid regex")
});
static BARE_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)^[\W_]*(?:(?:thanks|thank\s+you|thx|ta|please|pls|cheers|gracias|obrigad[oa]|merci|danke|",
        r"grazie|terima\s+kasih)[\W_]*)*$"
    ))
    .expect("valid regex")
});

/// Words that own up to a mistake and replace an earlier value.
static CORRECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:sorry|oops|typo|mistyped|wrong|correction|actually|i\s+meant|wait|scratch\s+that|",
        r"instead|not\s+that\s+one|perd[oó]n|disculp\w*|desculp\w*|errei|corre[cç]\w*|pardon|",
        r"d[ée]sol[ée]e?|entschuldigung|falsch|korrektur|maaf|salah|scusa|sbagliato|извините|ошибся)\b"
    ))
    .expect("valid regex")
});

/// A quoted stretch: '…', "…", “…”, ‘…’, «…», „…“, 「…」.
static QUOTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?:^|[\s:(\[])(?:'[^'\n]{1,300}'|"[^"\n]{1,300}"|“[^”\n]{1,300}”|‘[^’\n]{1,300}’|"#,
        r#"«[^»\n]{1,300}»|„[^“\n]{1,300}“|「[^」\n]{1,300}」)"#
    ))
    .expect("valid regex")
});

/// A mail header line ("From: …", "Reply-To: …") of a pasted message.
static HEADER_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?im)^[ \t>]*(?:from|to|cc|bcc|reply-to|sender|de|para|von|an|à|remitente|absender)[ \t]*:",
    )
    .expect("valid regex")
});

/// Local parts of shared mailboxes, which are a business's, not a person's.
const ROLE_MAILBOXES: &[&str] = &[
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "support",
    "info",
    "billing",
    "sales",
    "help",
    "admin",
    "sysadmin",
    "service",
    "orders",
    "bookings",
    "accounts",
    "returns",
    "claims",
    "jobs",
    "careers",
    "escalations",
    "hello",
    "contact",
    "team",
    "office",
    "enquiries",
    "inquiries",
    "customerservice",
    "kundenservice",
    "ayuda",
    "ventas",
    "atendimento",
    "contato",
    "notifications",
    "alerts",
    "mailer-daemon",
    "postmaster",
    "webmaster",
];

/// Whether an address is a shared business mailbox ("support@…").
pub fn is_role_mailbox(address: &str) -> bool {
    address.split_once('@').is_some_and(|(local, _)| {
        let local = local.to_lowercase();
        ROLE_MAILBOXES.contains(&local.as_str())
    })
}

/// Whose the value `value` of `field`, found at `span` of the customer's
/// `text`, is.
pub fn owner(
    text: &str,
    span: Range<usize>,
    field: &str,
    value: &str,
    fields: &FieldSet,
    region: Option<&str>,
    around: &Surroundings<'_>,
) -> Owner {
    if about_someone_else(text, span.start) || quoted(text, &span) || in_header(text, span.start) {
        return Owner::Other;
    }
    let mut asked = around.asked.contains(&field);
    for said in around.said_by_others {
        if value_supported_by_quote(fields, field, value, said, region) {
            // The bot or an agent gave this value. Repeating it back is the
            // customer's own only when it was a question about it ("is this
            // still the best number: …?").
            if !QUESTION.is_match(said) {
                return Owner::Other;
            }
            asked = true;
        }
    }
    let clause = &text[clause_start(text, span.start)..span.start];
    let other_at = other_cue_end(clause);
    let mine_at = FIRST_PERSON_CUE.find_iter(clause).map(|m| m.end()).last();
    match (other_at, mine_at) {
        (Some(other), mine) if mine.is_none_or(|mine| mine < other) => return Owner::Other,
        (_, Some(_)) => return Owner::Customer,
        _ => {}
    }
    let line = &text[line_start(text, span.start)..span.start];
    let after = &text[span.end..];
    let rest_of_sentence = &after[..sentence_end(after)];
    let bare = (BARE_BEFORE.is_match(&text[..span.start]) && BARE_AFTER.is_match(after))
        || (BARE_BEFORE.is_match(line) && BARE_AFTER.is_match(&after[..line_end(after)]));
    let own_place = CONTACT_THIRD
        .captures_iter(clause)
        .filter_map(|c| c.get(1))
        .any(|noun| OWN_PLACES.contains(&noun.as_str().to_lowercase().as_str()));
    if asked
        || bare
        || LABEL_BEFORE.is_match(line)
        || MINE_AFTER.is_match(after)
        || (other_at.is_none()
            && FIRST_PERSON_CUE.is_match(rest_of_sentence)
            && other_cue_end(rest_of_sentence).is_none())
        || SELF_INTRODUCED_BEFORE.is_match(clause)
        || own_place
        || CONTACT_ME.is_match(&text[..span.start])
        || (around.stated_before.contains(&field) && CORRECTION.is_match(text))
    {
        return Owner::Customer;
    }
    if field == "email" && is_role_mailbox(value) {
        return Owner::Other;
    }
    Owner::Unclear
}

/// Where the sentence that `text` starts in ends.
fn sentence_end(text: &str) -> usize {
    text.char_indices()
        .find(|(i, c)| {
            *c == '\n'
                || "。！？".contains(*c)
                || (".!?".contains(*c) && text[i + c.len_utf8()..].starts_with(char::is_whitespace))
        })
        .map_or(text.len(), |(i, _)| i)
}

fn line_end(text: &str) -> usize {
    text.find('\n').unwrap_or(text.len())
}

fn line_start(text: &str, pos: usize) -> usize {
    text[..pos].rfind('\n').map_or(0, |i| i + 1)
}

/// Whether `span` lies inside a quoted stretch of `text` that holds more
/// than the value (a value alone in quotes is only set off).
fn quoted(text: &str, span: &Range<usize>) -> bool {
    QUOTED.find_iter(text).any(|m| {
        m.start() <= span.start
            && span.end <= m.end()
            && text[m.start()..span.start]
                .chars()
                .chain(text[span.end..m.end()].chars())
                .any(char::is_alphanumeric)
    })
}

/// Whether `pos` is on a pasted mail header line.
fn in_header(text: &str, pos: usize) -> bool {
    let start = line_start(text, pos);
    HEADER_LINE
        .find(&text[start..pos])
        .is_some_and(|m| m.start() == 0)
}

/// Words that ask for each built-in field in a bot's or agent's question.
static ASKS_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:name|names|called|surname|who\s+am\s+i\s+(?:speaking|talking|chatting)\s+(?:with|to)|",
        r"who\s+is\s+this|who['’]s\s+this|nombre|llamas|llama\s+usted|nome|chama|nom|appelez|appelles|",
        r"heißen|heissen|hei[ßs]t|nama|зовут|имя|фамилия|adınız|adın|isminiz|imię|nazwisko|tên|namn|όνομα|λένε|שם|שמך|",
        r"اسم|اسمك|नाम)\b|名前|称呼|名字|姓名|叫什么|이름|성함"
    ))
    .expect("valid regex")
});
static ASKS_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:e-?mails?|mail|correo|courriel|e-?posta|почт\w*|البريد|ईमेल)\b",
        r"|メール|邮箱|电子邮件|이메일"
    ))
    .expect("valid regex")
});
static ASKS_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)\b(?:phone|mobile|cell|whatsapp|reach\s+you|call\s+you|contact\s+number|tel[eé]fono|",
        r"telefone|celular|t[eé]l[eé]phone|portable|telefon|handy|nomor|телефон\w*|numara|",
        r"số\s+điện\s+thoại|هاتف|फ़ोन|फोन)\b|電話|电话|전화|연락처",
        r"|(?:^|[^\p{L}])(?:(?:your|a|the|best|good|contact|mobile|cell|phone)\s+)(?:number|n[uú]mero|numéro|nummer|номер|numer)\b"
    ))
    .expect("valid regex")
});
static QUESTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[?？؟]").expect("valid regex"));

static QUESTION_MARK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?iu)[?？؟]|教えて|ください|주세요|알려|\bplease\s+(?:share|send|give|provide|tell|type|enter|confirm)\b")
        .expect("valid regex")
});

/// The built-in fields a bot's or agent's message asks the customer for.
pub fn fields_asked_in(question: &str) -> Vec<&'static str> {
    if !QUESTION_MARK.is_match(question) {
        return Vec::new();
    }
    let mut asked = Vec::new();
    for (field, words) in [
        ("name", &ASKS_NAME),
        ("email", &ASKS_EMAIL),
        ("phone", &ASKS_PHONE),
    ] {
        if words.is_match(question) {
            asked.push(field);
        }
    }
    asked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_of(text: &str, value: &str, around: &Surroundings<'_>) -> Owner {
        let fields = FieldSet::new(Vec::new(), &[]).expect("fields");
        let start = text.find(value).expect("value in text");
        let field = if value.contains('@') {
            "email"
        } else {
            "phone"
        };
        let normalised = fields.normalize(field, value, Some("US")).expect("valid");
        owner(
            text,
            start..start + value.len(),
            field,
            &normalised,
            &fields,
            Some("US"),
            around,
        )
    }

    #[test]
    fn first_person_statements_make_a_value_the_customers() {
        let none = Surroundings::default();
        for (text, value) in [
            ("my email is ana@example.com", "ana@example.com"),
            ("reach me at ana@example.com", "ana@example.com"),
            ("ana@example.com is my work address", "ana@example.com"),
            ("email: ana@example.com", "ana@example.com"),
            ("Send it to ana@example.com please", "ana@example.com"),
            ("Can you call me back? 415 555 0100", "415 555 0100"),
            ("It's ana@example.com", "ana@example.com"),
            (
                "the page says 'no account' but I signed up with ana@example.com",
                "ana@example.com",
            ),
            ("mi correo es ana@example.com", "ana@example.com"),
            ("+1 415 555 0100 is my number", "+1 415 555 0100"),
        ] {
            assert_eq!(owner_of(text, value, &none), Owner::Customer, "{text}");
        }
    }

    #[test]
    fn senders_notices_and_echoes_are_someone_elses() {
        let said = ["Please write to claims@harbor.com"];
        let echo = Surroundings {
            said_by_others: &said,
            ..Surroundings::default()
        };
        let none = Surroundings::default();
        for (text, value, around) in [
            (
                "I got an email from billing@power.com",
                "billing@power.com",
                &none,
            ),
            (
                "Your app shows 'Contact ana@fastcart.io for help'",
                "ana@fastcart.io",
                &none,
            ),
            (
                "Forwarded:\nFrom: ana@shop.com\nSubject: hi",
                "ana@shop.com",
                &none,
            ),
            (
                "The letter says to call 415 555 0199",
                "415 555 0199",
                &none,
            ),
            (
                "Could you call the site manager on 415 555 0199",
                "415 555 0199",
                &none,
            ),
            ("the seller's number is 415 555 0199", "415 555 0199", &none),
            (
                "I sent them to claims@harbor.com just now",
                "claims@harbor.com",
                &echo,
            ),
            (
                "who owns support@stylehaus.shop?",
                "support@stylehaus.shop",
                &none,
            ),
        ] {
            assert_eq!(owner_of(text, value, around), Owner::Other, "{text}");
        }
    }

    #[test]
    fn a_value_without_words_around_it_is_unclear_unless_asked() {
        let none = Surroundings::default();
        let text = "ana@example.com keeps bouncing";
        assert_eq!(owner_of(text, "ana@example.com", &none), Owner::Unclear);
        assert_eq!(
            owner_of("ana@example.com", "ana@example.com", &none),
            Owner::Customer
        );
        let asked = Surroundings {
            asked: &["email"],
            ..Surroundings::default()
        };
        assert_eq!(owner_of(text, "ana@example.com", &asked), Owner::Customer);
        let stated = Surroundings {
            stated_before: &["email"],
            ..Surroundings::default()
        };
        assert_eq!(
            owner_of(
                "wait no, ana@example.co.uk, sorry",
                "ana@example.co.uk",
                &stated
            ),
            Owner::Customer
        );
    }

    #[test]
    fn questions_for_a_field_are_recognised() {
        assert_eq!(fields_asked_in("Can I get your name please?"), ["name"]);
        assert_eq!(fields_asked_in("お名前を教えてください。"), ["name"]);
        assert_eq!(
            fields_asked_in("What's the best number to reach you?"),
            ["phone"]
        );
        assert_eq!(fields_asked_in("Which email should we use?"), ["email"]);
        assert!(fields_asked_in("What's your order number?").is_empty());
        assert!(fields_asked_in("Which city are you in?").is_empty());
        assert!(fields_asked_in("Your name is on the list.").is_empty());
    }
}
