//! The guard of the semantic cache: whether two user messages that an embedding model found
//! similar may share one cached answer.
//!
//! Owns: the comparison of two texts on what an embedding blurs but what changes the answer:
//! negation and antonym polarity ([`Refusal::Negation`]), numbers ([`Refusal::Numbers`]),
//! quoted strings ([`Refusal::Quoted`]) and names and identifiers ([`Refusal::Entities`]).
//! Does not: embed, index or search (the caller found the candidate and its similarity), nor
//! know the cache, tenants or requests: it only compares two texts, pure, without state or IO.
//!
//! The guard is a veto, not a similarity: `Ok` says that nothing it checks differs, never that
//! the two texts mean the same. Where a rule is in doubt it refuses: a refusal costs one
//! upstream call, a wrong hit serves a wrong answer.
//!
//! What is compared, in this order (the first difference is the reason):
//! - Quoted strings: the set of texts inside `"…"`, `'…'`, `` `…` `` (any run of backticks,
//!   closed by the same run), `“…”`, `‘…’` and `«…»`, exactly. A straight or curly apostrophe
//!   inside a word (`don't`, `it’s`) neither opens nor closes a quote. The quoted texts are
//!   then taken out of the message: the other checks see only what is outside quotes.
//! - Polarity: per concept, how many words stand on its negative side. Negations (`not`,
//!   `no`, `never`, `without`, `cannot`, every `n't` contraction and its apostrophe-less
//!   spelling, ...) are one concept; each antonym pair is another, named after its positive
//!   side, whose negative words are counted (`off`, `disable`, `stop`, `shut down` for `on`;
//!   `remove`, `delete`, `uninstall` for `add`; `after`, `later` for `before`; `min`,
//!   `minimum`, `least` for `max`; ...). Synonyms on one side fall together (`turn off` is
//!   `disable`) and positive words are not counted, so `turn on` and `enable` agree while a
//!   flip to the other side always adds or drops a negative word. Also refused: a word
//!   negated by a prefix in one message and bare in the other (`unsafe` against `safe`,
//!   `invalid` against `valid`).
//! - Numbers: the multiset of numbers, digits and words alike: separators (`1,000`, `1_000`)
//!   and leading or trailing zeros dropped, signs and decimals kept, a percentage marked
//!   (`50%` is `50 percent`), number words composed (`twenty-five`, `two hundred and five`,
//!   `a dozen`, `1.5 million`). A number with a unit attached (`5kg`) is the number.
//! - Entities: a capitalised word not at a sentence's start, a word with a capital inside
//!   (`iPhone`, `USB`), or one with a digit, `_`, `.`, `+` or `#` inside (`gpt-4o`, `v2.1`,
//!   `my_var`, `Node.js`, `C++`): each must occur, in any case, as a word of the other
//!   message (so `Python` and `python`, or a name at a sentence's start, agree).
//!
//! What the guard cannot see: a change of meaning in plain words (`Spain` at the start of a
//! sentence against `Italy` at the start of another, `save money` against `spend money`),
//! swapped roles (`convert A to B` against `convert B to A`), and antonyms outside its table.

use std::collections::{BTreeMap, BTreeSet};

/// Why two messages may not share an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A negation, or the negative side of an antonym pair, is in one message and not in the
    /// other (or as often), or a word is negated by a prefix in one and bare in the other.
    Negation,
    /// The numbers differ, as a multiset.
    Numbers,
    /// The quoted strings differ, as a set.
    Quoted,
    /// A name or identifier of one message is not a word of the other.
    Entities,
}

/// `Ok(())` when nothing the guard checks differs between the cached message and the new one.
pub fn check(cached: &str, asked: &str) -> Result<(), Refusal> {
    let cached = Facts::of(cached);
    let asked = Facts::of(asked);
    if cached.quoted != asked.quoted {
        return Err(Refusal::Quoted);
    }
    if cached.negatives != asked.negatives
        || prefix_flip(&cached, &asked)
        || prefix_flip(&asked, &cached)
    {
        return Err(Refusal::Negation);
    }
    if cached.numbers != asked.numbers {
        return Err(Refusal::Numbers);
    }
    if !covered(&cached, &asked) || !covered(&asked, &cached) {
        return Err(Refusal::Entities);
    }
    Ok(())
}

/// What the guard compares of one message.
struct Facts {
    /// The quoted strings.
    quoted: BTreeSet<String>,
    /// Per concept, the number of words on its negative side.
    negatives: BTreeMap<&'static str, usize>,
    /// The numbers, canonical, sorted.
    numbers: Vec<String>,
    /// The entity candidates, lower case.
    entities: BTreeSet<String>,
    /// Every word and token, lower case, without a possessive `'s`.
    vocabulary: BTreeSet<String>,
}

impl Facts {
    fn of(text: &str) -> Self {
        let (quoted, outside) = quotes(text);
        let tokens = tokens(&outside);
        let mut words = Vec::with_capacity(tokens.len());
        let mut vocabulary = BTreeSet::new();
        for token in &tokens {
            let lower = token.text.to_lowercase();
            for word in split_words(&lower) {
                vocabulary.insert(base(&word).to_owned());
                words.push(word);
            }
            vocabulary.insert(base(&lower).to_owned());
        }
        let mut numbers = numbers(&words);
        numbers.sort_unstable();
        Self {
            quoted,
            negatives: negatives(&words),
            numbers,
            entities: tokens.iter().filter_map(entity).collect(),
            vocabulary,
        }
    }
}

/// A word without a possessive `'s`.
fn base(word: &str) -> &str {
    word.strip_suffix("'s").unwrap_or(word)
}

// ---------------------------------------------------------------------------------------------
// Quotes

/// The closing quote of an opening one (backticks apart).
fn closer_of(open: char) -> Option<char> {
    match open {
        '"' => Some('"'),
        '\'' => Some('\''),
        '\u{201C}' => Some('\u{201D}'),
        '\u{2018}' => Some('\u{2019}'),
        '\u{00AB}' => Some('\u{00BB}'),
        _ => None,
    }
}

/// Whether the quote at `i` may open: not glued to a word before it, text right after it.
fn opens(chars: &[char], i: usize) -> bool {
    let before = i.checked_sub(1).and_then(|p| chars.get(p));
    !before.is_some_and(|c| c.is_alphanumeric())
        && chars.get(i + 1).is_some_and(|c| !c.is_whitespace())
}

/// Whether the quote at `i` may close: text right before it, not glued to a word after it.
fn closes(chars: &[char], i: usize) -> bool {
    let before = i.checked_sub(1).and_then(|p| chars.get(p));
    before.is_some_and(|c| !c.is_whitespace())
        && !chars.get(i + 1).is_some_and(|c| c.is_alphanumeric())
}

/// How many backticks in a row start at `i`.
fn ticks(chars: &[char], i: usize) -> usize {
    chars
        .get(i..)
        .map_or(0, |rest| rest.iter().take_while(|&&c| c == '`').count())
}

/// The quoted strings of `text`, and the text with each quote replaced by a space.
///
/// An opener that finds no closer is kept as text, and no later opener of its kind is tried
/// (it would find none either): linear in the text's length.
fn quotes(text: &str) -> (BTreeSet<String>, String) {
    let chars: Vec<char> = text.chars().collect();
    let mut found = BTreeSet::new();
    let mut outside = String::with_capacity(text.len());
    let mut dead: Vec<char> = Vec::new();
    let mut dead_ticks: Vec<usize> = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c == '`' {
            let run = ticks(&chars, i);
            if !dead_ticks.contains(&run) {
                let mut j = i + run;
                let mut close = None;
                while let Some(&d) = chars.get(j) {
                    if d == '`' {
                        let other = ticks(&chars, j);
                        if other == run {
                            close = Some(j);
                            break;
                        }
                        j += other;
                    } else {
                        j += 1;
                    }
                }
                match close {
                    Some(j) => {
                        found.insert(chars.get(i + run..j).unwrap_or_default().iter().collect());
                        outside.push(' ');
                        i = j + run;
                        continue;
                    }
                    None => dead_ticks.push(run),
                }
            }
            outside.extend(std::iter::repeat_n('`', run));
            i += run;
            continue;
        }
        if let Some(closer) = closer_of(c)
            && !dead.contains(&c)
            && opens(&chars, i)
        {
            let close =
                (i + 1..chars.len()).find(|&j| chars.get(j) == Some(&closer) && closes(&chars, j));
            match close {
                Some(j) => {
                    found.insert(chars.get(i + 1..j).unwrap_or_default().iter().collect());
                    outside.push(' ');
                    i = j + 1;
                    continue;
                }
                None => dead.push(c),
            }
        }
        outside.push(c);
        i += 1;
    }
    (found, outside)
}

// ---------------------------------------------------------------------------------------------
// Tokens and words

/// One token of a message, as written (apostrophes and minus signs made ASCII).
struct Token {
    text: String,
    /// First token of the message, or after `.`, `!`, `?`, `:`, `;` or a line break.
    sentence_start: bool,
}

/// The tokens of `text`: runs of letters, digits and `_`, joined by `'`, `.` or `-` between two
/// letters or digits (`don't`, `v2.1`, `gpt-4o`), `,` between two digits (`1,000`); with a
/// sign or point before a digit at the start (`-5`, `.5`), `%` after a digit and `+` or `#`
/// closing a word (`C++`, `C#`).
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text
        .chars()
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '\u{02BC}' => '\'',
            '\u{2212}' | '\u{2013}' => '-',
            c => c,
        })
        .collect();
    let at = |i: Option<usize>| i.and_then(|i| chars.get(i)).copied();
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    let mut out = Vec::new();
    let mut current = String::new();
    let mut sentence_start = true;
    let mut current_start = true;
    for (i, &c) in chars.iter().enumerate() {
        let prev = at(i.checked_sub(1));
        let next = at(Some(i + 1));
        let keep = if c.is_alphanumeric() || c == '_' {
            true
        } else if current.is_empty() {
            matches!(c, '-' | '.') && digit(next) && !alnum(prev)
        } else {
            match c {
                '\'' | '.' | '-' => alnum(prev) && alnum(next),
                ',' => digit(prev) && digit(next),
                '%' => digit(prev),
                '+' | '#' => {
                    (prev.is_some_and(char::is_alphabetic) || (c == '+' && prev == Some('+')))
                        && !alnum(next)
                }
                _ => false,
            }
        };
        if keep {
            if current.is_empty() {
                current_start = sentence_start;
                sentence_start = false;
            }
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            out.push(Token {
                text: std::mem::take(&mut current),
                sentence_start: current_start,
            });
        }
        if matches!(c, '.' | '!' | '?' | ':' | ';' | '\n') {
            sentence_start = true;
        }
    }
    if !current.is_empty() {
        out.push(Token {
            text: current,
            sentence_start: current_start,
        });
    }
    out
}

/// A lower-case token cut at each hyphen between two letters (`twenty-five`, `turn-off`).
fn split_words(token: &str) -> Vec<String> {
    let chars: Vec<char> = token.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let letters = i
            .checked_sub(1)
            .and_then(|p| chars.get(p))
            .is_some_and(|c| c.is_alphabetic())
            && chars.get(i + 1).is_some_and(|c| c.is_alphabetic());
        if c == '-' && letters {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out
}

// ---------------------------------------------------------------------------------------------
// Polarity

/// The concept a word stands on the negative side of, named after the positive side.
fn negative_of(word: &str) -> Option<&'static str> {
    let concept = match word {
        "not" | "no" | "non" | "never" | "none" | "nothing" | "nobody" | "nowhere" | "neither"
        | "nor" | "without" | "cannot" | "dont" | "doesnt" | "didnt" | "isnt" | "arent"
        | "wasnt" | "werent" | "wont" | "wouldnt" | "cant" | "couldnt" | "shouldnt" | "hasnt"
        | "havent" | "hadnt" | "mustnt" | "neednt" | "aint" => "not",
        w if w.ends_with("n't") => "not",
        "off" | "disable" | "disables" | "disabled" | "disabling" | "deactivate"
        | "deactivates" | "deactivated" | "deactivating" | "stop" | "stops" | "stopped"
        | "stopping" | "halt" | "halts" | "halted" | "halting" | "shut" | "shuts" | "shutting"
        | "shutdown" | "kill" | "kills" | "killed" | "killing" | "terminate" | "terminates"
        | "terminated" | "terminating" => "on",
        "remove" | "removes" | "removed" | "removing" | "removal" | "delete" | "deletes"
        | "deleted" | "deleting" | "deletion" | "uninstall" | "uninstalls" | "uninstalled"
        | "uninstalling" | "exclude" | "excludes" | "excluded" | "excluding" | "erase"
        | "erases" | "erased" | "erasing" => "add",
        "decrease" | "decreases" | "decreased" | "decreasing" | "reduce" | "reduces"
        | "reduced" | "reducing" | "lower" | "lowers" | "lowered" | "lowering" | "less"
        | "fewer" | "shrink" | "shrinks" | "shrinking" | "shrank" => "increase",
        "slow" | "slows" | "slowed" | "slowing" | "slower" | "slowest" | "slowly" => "fast",
        "after" | "afterwards" | "afterward" | "later" => "before",
        "min" | "minimum" | "minimal" | "minimise" | "minimize" | "minimum's" | "least"
        | "lowest" | "smallest" | "fewest" => "max",
        "descending" | "desc" | "descend" | "descends" => "ascending",
        "download" | "downloads" | "downloaded" | "downloading" => "upload",
        "export" | "exports" | "exported" | "exporting" => "import",
        "decrypt" | "decrypts" | "decrypted" | "decrypting" | "decryption" => "encrypt",
        "unlock" | "unlocks" | "unlocked" | "unlocking" => "lock",
        "downgrade" | "downgrades" | "downgraded" | "downgrading" => "upgrade",
        "sell" | "sells" | "selling" | "sold" => "buy",
        "close" | "closes" | "closed" | "closing" => "open",
        "deny" | "denies" | "denied" | "denying" | "forbid" | "forbids" | "forbidden"
        | "disallow" | "disallows" | "disallowed" | "prohibit" | "prohibits" | "prohibited" => {
            "allow"
        }
        "false" => "true",
        "logout" | "logoff" | "signout" => "log in",
        "unsubscribe" | "unsubscribes" | "unsubscribed" | "unsubscribing" => "subscribe",
        "disconnect" | "disconnects" | "disconnected" | "disconnecting" => "connect",
        "decompress" | "decompresses" | "decompressed" | "decompressing" | "unzip" | "unzips"
        | "unzipped" | "unzipping" => "compress",
        _ => return None,
    };
    Some(concept)
}

/// Per concept, how many words of `words` stand on its negative side.
fn negatives(words: &[String]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        let word = word.as_str();
        let next = words.get(i + 1).map(String::as_str);
        let prev = i
            .checked_sub(1)
            .and_then(|p| words.get(p))
            .map(String::as_str);
        let concept = match word {
            "log" | "logs" | "logged" | "logging" | "sign" | "signs" | "signed" | "signing"
                if matches!(next, Some("out" | "off")) =>
            {
                i += 1;
                Some("log in")
            }
            // `10 min` is ten minutes; `lower case` is not lowering.
            "min" if prev.is_some_and(is_number) => None,
            "lower" if next == Some("case") => None,
            word => negative_of(word),
        };
        if let Some(concept) = concept {
            *out.entry(concept).or_insert(0) += 1;
        }
        i += 1;
    }
    out
}

/// Prefixes that negate the word they start, and how long the rest must be at least.
const PREFIXES: [(&str, usize); 7] = [
    ("un", 3),
    ("non", 3),
    ("dis", 4),
    ("in", 4),
    ("im", 4),
    ("il", 4),
    ("ir", 4),
];

/// Whether a word of `x` is a prefix-negated word of `y` that `y` has only bare (`unsafe` in
/// `x`, `safe` and no `unsafe` in `y`).
fn prefix_flip(x: &Facts, y: &Facts) -> bool {
    x.vocabulary.iter().any(|word| {
        !y.vocabulary.contains(word)
            && PREFIXES.iter().any(|&(prefix, least)| {
                word.strip_prefix(prefix).is_some_and(|rest| {
                    rest.chars().count() >= least && y.vocabulary.contains(rest)
                })
            })
    })
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A part of a number written in words.
#[derive(Clone, Copy)]
enum Part {
    /// One to nine.
    Unit(u128),
    /// Zero, ten to nineteen.
    Teen(u128),
    /// Twenty to ninety.
    Tens(u128),
    Hundred,
    Dozen,
    /// Thousand, million, billion.
    Big(u128),
    And,
}

fn part(word: &str) -> Option<Part> {
    let units = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    let tens = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(n) = units.iter().position(|&u| u == word) {
        let n = n as u128;
        return Some(if (1..=9).contains(&n) {
            Part::Unit(n)
        } else {
            Part::Teen(n)
        });
    }
    if let Some(n) = tens.iter().position(|&t| t == word) {
        return Some(Part::Tens((n as u128 + 2) * 10));
    }
    Some(match word {
        "hundred" => Part::Hundred,
        "dozen" => Part::Dozen,
        "thousand" => Part::Big(1_000),
        "million" => Part::Big(1_000_000),
        "billion" => Part::Big(1_000_000_000),
        "and" => Part::And,
        _ => return None,
    })
}

fn is_multiplier(word: &str) -> bool {
    matches!(part(word), Some(Part::Hundred | Part::Dozen | Part::Big(_)))
}

/// Whether `word` is a number: digits first, or a number word.
fn is_number(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
        || matches!(
            part(word),
            Some(Part::Unit(_) | Part::Teen(_) | Part::Tens(_))
        )
}

/// A decimal: `units / 10^scale`.
#[derive(Clone, Copy)]
struct Dec {
    units: u128,
    scale: u32,
}

impl Dec {
    fn int(units: u128) -> Self {
        Self { units, scale: 0 }
    }

    /// From a canonical number without sign or `%`.
    fn parse(canonical: &str) -> Option<Self> {
        let (int, frac) = canonical.split_once('.').unwrap_or((canonical, ""));
        let digits = format!("{int}{frac}");
        Some(Self {
            units: digits.parse().ok()?,
            scale: u32::try_from(frac.len()).ok()?,
        })
    }

    fn times(self, k: u128) -> Option<Self> {
        Some(Self {
            units: self.units.checked_mul(k)?,
            scale: self.scale,
        })
    }

    fn plus(self, other: Self) -> Option<Self> {
        let scale = self.scale.max(other.scale);
        let widen = |d: Self| d.units.checked_mul(10u128.checked_pow(scale - d.scale)?);
        Some(Self {
            units: widen(self)?.checked_add(widen(other)?)?,
            scale,
        })
    }

    fn is_zero(self) -> bool {
        self.units == 0
    }

    fn render(self, negative: bool) -> String {
        let digits = self.units.to_string();
        let scale = self.scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        canonical(negative, int, frac, false)
    }
}

/// A number as compared: sign (not on zero), integer part without leading zeros, fraction
/// without trailing zeros, `%` for a percentage.
fn canonical(negative: bool, int: &str, frac: &str, percent: bool) -> String {
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    let zero = int == "0" && frac.is_empty();
    let mut out = String::with_capacity(int.len() + frac.len() + 3);
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if percent {
        out.push('%');
    }
    out
}

/// Whether a number starts at `chars[j]`: a digit, or a sign or point first before a digit.
fn starts_number(chars: &[char], j: usize) -> bool {
    let next_digit = chars.get(j + 1).is_some_and(char::is_ascii_digit);
    match chars.get(j) {
        Some(c) if c.is_ascii_digit() => true,
        Some('-' | '.') => j == 0 && next_digit,
        _ => false,
    }
}

/// Whether `chars[j..]` starts with exactly three digits.
fn group_of_three(chars: &[char], j: usize) -> bool {
    (j..j + 3).all(|k| chars.get(k).is_some_and(char::is_ascii_digit))
        && !chars.get(j + 3).is_some_and(char::is_ascii_digit)
}

/// The number starting at `chars[j]` (see [`starts_number`]), canonical, and where it ends.
fn read_number(chars: &[char], mut j: usize) -> (String, usize) {
    let negative = chars.get(j) == Some(&'-');
    if negative {
        j += 1;
    }
    let mut int = String::new();
    while let Some(&c) = chars.get(j) {
        if c.is_ascii_digit() {
            int.push(c);
            j += 1;
        } else if matches!(c, ',' | '_') && !int.is_empty() && group_of_three(chars, j + 1) {
            j += 1;
        } else {
            break;
        }
    }
    let mut frac = String::new();
    if chars.get(j) == Some(&'.') && chars.get(j + 1).is_some_and(char::is_ascii_digit) {
        j += 1;
        while let Some(&c) = chars.get(j).filter(|c| c.is_ascii_digit()) {
            frac.push(c);
            j += 1;
        }
    }
    let percent = chars.get(j) == Some(&'%');
    if percent {
        j += 1;
    }
    (canonical(negative, &int, &frac, percent), j)
}

/// The number `word` is, when it is one and nothing else.
fn whole_number(word: &str) -> Option<String> {
    let chars: Vec<char> = word.chars().collect();
    if !starts_number(&chars, 0) {
        return None;
    }
    let (number, end) = read_number(&chars, 0);
    (end == chars.len()).then_some(number)
}

/// Whether the `one` at `words[i]` is a pronoun (`which one`, `one of`), not a count.
fn pronoun(words: &[String], i: usize) -> bool {
    let prev = i
        .checked_sub(1)
        .and_then(|p| words.get(p))
        .map(String::as_str);
    let next = words.get(i + 1).map(String::as_str);
    matches!(next, Some("of" | "another"))
        || matches!(
            prev,
            Some(
                "the"
                    | "this"
                    | "that"
                    | "which"
                    | "each"
                    | "every"
                    | "any"
                    | "no"
                    | "another"
                    | "some"
                    | "a"
                    | "an"
                    | "what"
                    | "new"
                    | "old"
                    | "right"
                    | "wrong"
                    | "other"
                    | "last"
                    | "next"
                    | "same"
                    | "good"
                    | "better"
                    | "best"
                    | "big"
                    | "little"
                    | "first"
                    | "second"
                    | "cheaper"
                    | "cheapest"
            )
        )
}

/// Where a number phrase is after: its last state.
#[derive(Clone, Copy)]
enum Last {
    /// A number in digits, or `a` before a multiplier.
    Lead,
    Unit,
    Teen,
    Tens,
    Hundred,
    Big,
    Dozen,
}

/// The number phrase starting at `words[i]` (`twenty five`, `two hundred and five`,
/// `a dozen`, `1.5 million`, `50 percent`), canonical, and the index after it.
fn phrase(words: &[String], i: usize) -> Option<(String, usize)> {
    let first = words.get(i)?.as_str();
    let next = words.get(i + 1).map(String::as_str);
    let mut negative = false;
    let (mut current, mut last) = if let Some(number) = whole_number(first) {
        if number.ends_with('%') {
            return Some((number, i + 1));
        }
        negative = number.starts_with('-');
        match Dec::parse(number.trim_start_matches('-')) {
            Some(d) => (d, Last::Lead),
            None => return Some((number, i + 1)),
        }
    } else if matches!(first, "a" | "an") && next.is_some_and(is_multiplier) {
        (Dec::int(1), Last::Lead)
    } else {
        match part(first)? {
            Part::Unit(1) if !next.is_some_and(is_multiplier) && pronoun(words, i) => {
                return None;
            }
            Part::Unit(n) => (Dec::int(n), Last::Unit),
            Part::Teen(n) => (Dec::int(n), Last::Teen),
            Part::Tens(n) => (Dec::int(n), Last::Tens),
            _ => return None,
        }
    };
    let mut total = Dec::int(0);
    let mut j = i + 1;
    while let Some(word) = words.get(j) {
        let Some(p) = part(word) else { break };
        let step = match (last, p) {
            (Last::Tens | Last::Hundred | Last::Big, Part::Unit(n)) => {
                current.plus(Dec::int(n)).map(|c| (c, total, Last::Unit))
            }
            (Last::Hundred | Last::Big, Part::Teen(n)) => {
                current.plus(Dec::int(n)).map(|c| (c, total, Last::Teen))
            }
            (Last::Hundred | Last::Big, Part::Tens(n)) => {
                current.plus(Dec::int(n)).map(|c| (c, total, Last::Tens))
            }
            (Last::Lead | Last::Unit | Last::Teen | Last::Tens, Part::Hundred) => {
                current.times(100).map(|c| (c, total, Last::Hundred))
            }
            (Last::Lead | Last::Unit | Last::Teen | Last::Tens, Part::Dozen) => {
                current.times(12).map(|c| (c, total, Last::Dozen))
            }
            (
                Last::Lead | Last::Unit | Last::Teen | Last::Tens | Last::Hundred | Last::Dozen,
                Part::Big(k),
            ) => current
                .times(k)
                .and_then(|c| total.plus(c))
                .map(|t| (Dec::int(0), t, Last::Big)),
            (Last::Hundred | Last::Big, Part::And)
                if words.get(j + 1).and_then(|w| part(w)).is_some_and(|p| {
                    matches!(p, Part::Unit(_) | Part::Teen(_) | Part::Tens(_))
                }) =>
            {
                Some((current, total, last))
            }
            _ => None,
        };
        let Some((c, t, l)) = step else { break };
        (current, total, last) = (c, t, l);
        j += 1;
    }
    let value = total.plus(current).unwrap_or(current);
    let mut out = value.render(negative && !value.is_zero());
    let after = words.get(j).map(String::as_str);
    if matches!(after, Some("percent" | "pct")) {
        out.push('%');
        j += 1;
    } else if after == Some("per") && words.get(j + 1).is_some_and(|w| w == "cent") {
        out.push('%');
        j += 2;
    }
    Some((out, j))
}

/// The numbers of `words`, canonical, in order.
fn numbers(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        if let Some((number, end)) = phrase(words, i) {
            out.push(number);
            i = end;
            continue;
        }
        let chars: Vec<char> = word.chars().collect();
        let mut j = 0;
        while j < chars.len() {
            if starts_number(&chars, j) {
                let (number, end) = read_number(&chars, j);
                out.push(number);
                j = end;
            } else {
                j += 1;
            }
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Entities

/// The token as an entity candidate (lower case, without a possessive `'s`), when it is one.
fn entity(token: &Token) -> Option<String> {
    let text = token.text.as_str();
    let first = text.chars().next()?;
    // A number, with or without its unit (`5kg`), is the numbers' business.
    if first.is_ascii_digit() || matches!(first, '-' | '.') {
        return None;
    }
    let lower = text.to_lowercase();
    let lower = base(&lower);
    if matches!(lower, "i" | "i'm" | "i've" | "i'll" | "i'd") {
        return None;
    }
    let inner_capital = text.chars().skip(1).any(char::is_uppercase);
    let capital = first.is_uppercase() && !token.sentence_start;
    // `e.g`, `i.e`, `a.m`: dots between single letters are an abbreviation.
    let dotted = text.contains('.') && text.split('.').any(|s| s.chars().count() > 1);
    let marked = dotted
        || text
            .chars()
            .any(|c| c.is_ascii_digit() || matches!(c, '_' | '+' | '#'));
    (inner_capital || capital || marked).then(|| lower.to_owned())
}

/// Whether every entity of `x` is a word of `y`.
fn covered(x: &Facts, y: &Facts) -> bool {
    x.entities.iter().all(|e| y.vocabulary.contains(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(a: &str, b: &str) {
        assert_eq!(check(a, b), Ok(()), "{a:?} / {b:?}");
        assert_eq!(check(b, a), Ok(()), "{b:?} / {a:?}");
    }

    fn refuse(a: &str, b: &str, why: Refusal) {
        assert_eq!(check(a, b), Err(why.clone()), "{a:?} / {b:?}");
        assert_eq!(check(b, a), Err(why), "{b:?} / {a:?}");
    }

    /// The numbers of `text`, in order.
    fn nums(text: &str) -> Vec<String> {
        let words: Vec<String> = tokens(text)
            .iter()
            .flat_map(|t| split_words(&t.text.to_lowercase()))
            .collect();
        numbers(&words)
    }

    #[test]
    fn paraphrases_pass() {
        pass("How do I turn on dark mode?", "how can I enable dark mode");
        pass(
            "How do I turn off dark mode?",
            "how can I disable dark mode",
        );
        pass("Switch the wifi off", "turn off the wifi");
        pass(
            "How do I delete a git branch?",
            "What's the command to remove a branch in git?",
        );
        pass("Why don't my tests run?", "Why do my tests not run?");
        pass("Why can't I log in?", "Why cannot I log in?");
        pass("Why don’t my tests run?", "Why don't my tests run?");
        pass("Is Python slow?", "is python slow");
        pass(
            "What's the capital of France?",
            "Which city is France's capital?",
        );
        pass("Give me a dozen ideas", "Give me 12 ideas");
        pass("What's 50% of 1,000?", "what is fifty percent of 1000");
        pass(
            "Explain recursion like I'm five.",
            "Explain recursion as if I were 5 years old",
        );
        pass(
            "Which one is better, tea or coffee?",
            "Which is better: coffee or tea?",
        );
        pass("How do I log out of Slack?", "How can I sign out of Slack?");
    }

    #[test]
    fn negation_is_refused() {
        refuse(
            "Why do my tests run?",
            "Why don't my tests run?",
            Refusal::Negation,
        );
        refuse(
            "Why do my tests run?",
            "Why don’t my tests run?",
            Refusal::Negation,
        );
        refuse(
            "Why do my tests run?",
            "Why dont my tests run?",
            Refusal::Negation,
        );
        refuse("Is it safe?", "Is it not safe?", Refusal::Negation);
        refuse(
            "A list with duplicates",
            "A list without duplicates",
            Refusal::Negation,
        );
        refuse(
            "NEVER rinse chicken",
            "always rinse chicken",
            Refusal::Negation,
        );
        refuse(
            "Is it safe to eat?",
            "Is it unsafe to eat?",
            Refusal::Negation,
        );
        refuse(
            "Is this JSON valid?",
            "Is this JSON invalid?",
            Refusal::Negation,
        );
        refuse("a non-empty list", "an empty list", Refusal::Negation);
        // Twice against once.
        refuse("It isn't slow", "It isn't not slow", Refusal::Negation);
    }

    #[test]
    fn antonyms_are_refused() {
        let why = Refusal::Negation;
        refuse(
            "How do I turn on dark mode?",
            "How do I turn off dark mode?",
            why.clone(),
        );
        refuse(
            "How do I enable dark mode?",
            "How do I disable dark mode?",
            why.clone(),
        );
        refuse("How do I turn it on?", "How do I turn it off?", why.clone());
        refuse(
            "How do I enable dark mode?",
            "How do I turn off dark mode?",
            why.clone(),
        );
        refuse("Start the server", "Stop the server", why.clone());
        refuse("Add a user", "Remove a user", why.clone());
        refuse("Increase the timeout", "Decrease the timeout", why.clone());
        refuse("Eat before a run", "Eat after a run", why.clone());
        refuse("What's the max size?", "What's the min size?", why.clone());
        refuse("the maximum size", "the minimum size", why.clone());
        refuse("Sort ascending", "Sort descending", why.clone());
        refuse("Log in to AWS", "Log out of AWS", why.clone());
        refuse("Return true", "Return false", why);
        // Minutes are not a minimum.
        pass("Boil it for 10 min", "Boil it for 10 minutes");
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(nums("1,000 and 1_000 and 1000.0"), ["1000", "1000", "1000"]);
        assert_eq!(nums("-5 degrees, 0.50 and .5"), ["-5", "0.5", "0.5"]);
        assert_eq!(
            nums("50% or fifty percent or 50 per cent"),
            ["50%", "50%", "50%"]
        );
        assert_eq!(nums("twenty-five, twenty five"), ["25", "25"]);
        assert_eq!(nums("two hundred and five"), ["205"]);
        assert_eq!(nums("a dozen, two dozen"), ["12", "24"]);
        assert_eq!(
            nums("a thousand, 3 million, 1.5 million"),
            ["1000", "3000000", "1500000"]
        );
        assert_eq!(nums("one million two hundred thousand"), ["1200000"]);
        assert_eq!(nums("5kg, 007, gpt-4o, v2.1"), ["5", "7", "4", "2.1"]);
        assert_eq!(
            nums("1,2,3 and 2024-01-05"),
            ["1", "2", "3", "2024", "1", "5"]
        );
        assert_eq!(nums("x86_64"), ["86", "64"]);
        assert_eq!(nums("one two three"), ["1", "2", "3"]);
        assert_eq!(nums("which one is one of the best? take one"), ["1"]);
        assert_eq!(nums("no numbers here"), Vec::<String>::new());
    }

    #[test]
    fn numbers_are_refused() {
        let why = Refusal::Numbers;
        refuse(
            "Boil an egg for 6 minutes",
            "Boil an egg for 9 minutes",
            why.clone(),
        );
        refuse("What's 15% of 240?", "What's 20% of 240?", why.clone());
        refuse("Take two pills", "Take 3 pills", why.clone());
        refuse("-5 degrees", "5 degrees", why.clone());
        refuse("1,000 items", "1,000,000 items", why.clone());
        refuse("a dozen eggs", "two dozen eggs", why.clone());
        refuse("3.5%", "5.3%", why.clone());
        refuse("from 5 to 10", "from 10 to 10", why);
        pass("I weigh 70kg", "I weigh 70 kg");
        pass("12 eggs", "a dozen eggs");
    }

    #[test]
    fn quotes_are_compared_exactly() {
        let why = Refusal::Quoted;
        refuse(r#"grep for "TODO""#, r#"grep for "todo""#, why.clone());
        refuse(
            "What does `git reset --hard` do?",
            "What does `git reset --soft` do?",
            why.clone(),
        );
        refuse(
            "Translate 'good morning'",
            "Translate 'good night'",
            why.clone(),
        );
        refuse("Print “None”", "Print “null”", why.clone());
        refuse("Rename ‘a_b’ now", "Rename ‘a_c’ now", why.clone());
        refuse("Split on ','", "Split on ';'", why.clone());
        refuse(
            "Explain ```let x = 1;```",
            "Explain ```let x = 2;```",
            why.clone(),
        );
        refuse("Explain `foo`", "Explain foo", why);
        // Apostrophes are not quotes, and whatever is quoted is only compared as quoted.
        pass("It's Bob's 'x' and don't", "it's bob's 'x' and don't");
        pass(
            "What does 'not found' mean?",
            "what's the meaning of 'not found'",
        );
        assert_eq!(Facts::of("don't 'x' it’s ‘y’ users' ok").quoted.len(), 2);
        assert_eq!(
            Facts::of("``a `b` c``").quoted,
            BTreeSet::from(["a `b` c".to_owned()])
        );
        assert!(Facts::of("an 'unclosed quote").quoted.is_empty());
    }

    #[test]
    fn entities_are_compared() {
        let why = Refusal::Entities;
        refuse(
            "How do I install Django on Ubuntu?",
            "How do I install Flask on Ubuntu?",
            why.clone(),
        );
        refuse(
            "Is gpt-4o good at maths?",
            "Is gpt-4o-mini good at maths?",
            why.clone(),
        );
        refuse(
            "Why is my_var undefined?",
            "Why is my_val undefined?",
            why.clone(),
        );
        refuse("I love C++", "I love C#", why.clone());
        refuse("Deploy to AWS", "Deploy to GCP", why);
        // Case and a sentence's start do not matter; `I` is no name.
        pass("How do I learn Python?", "python: how do I learn it?");
        pass("Is ChatGPT free?", "is chatgpt free");
        pass("e.g. this one", "E.g. this one");
    }

    #[test]
    fn empty_and_odd_inputs() {
        pass("", "");
        pass("?!", "...");
        refuse("\"", "\"\"", Refusal::Quoted);
        refuse("", "not", Refusal::Negation);
        let long = "don't 'a 1,000 `b ".repeat(5_000);
        assert!(check(&long, &long).is_ok());
    }

    #[derive(serde::Deserialize)]
    struct Pair {
        cached: String,
        asked: String,
        should_hit: bool,
        kind: String,
    }

    #[test]
    fn fixture_pairs() {
        let pairs: Vec<Pair> =
            serde_json::from_str(include_str!("../../tests/fixtures/semantic/pairs.json"))
                .expect("pairs.json parses");
        assert!(pairs.len() >= 120, "{} pairs", pairs.len());
        let mut seen = BTreeSet::new();
        let (mut paraphrases, mut passed) = (0, 0);
        let mut missed = Vec::new();
        for pair in &pairs {
            assert!(
                seen.insert((pair.cached.as_str(), pair.asked.as_str())),
                "duplicate pair"
            );
            assert_eq!(
                pair.should_hit,
                pair.kind == "paraphrase",
                "{:?}",
                pair.cached
            );
            let got = check(&pair.cached, &pair.asked);
            let want = match pair.kind.as_str() {
                "paraphrase" => {
                    paraphrases += 1;
                    if got.is_ok() {
                        passed += 1;
                    } else {
                        println!(
                            "paraphrase refused ({got:?}): {:?} / {:?}",
                            pair.cached, pair.asked
                        );
                    }
                    continue;
                }
                "negation" => Refusal::Negation,
                "number" => Refusal::Numbers,
                "quoted" => Refusal::Quoted,
                "entity" => Refusal::Entities,
                other => panic!("unknown kind {other}"),
            };
            if got != Err(want.clone()) {
                missed.push(format!(
                    "{want:?} wanted, {got:?}: {:?} / {:?}",
                    pair.cached, pair.asked
                ));
            }
        }
        println!("paraphrases passed: {passed}/{paraphrases}");
        assert!(
            missed.is_empty(),
            "must-not pairs not refused as their kind:\n{}",
            missed.join("\n")
        );
        assert!(
            passed * 10 >= paraphrases * 9,
            "{passed}/{paraphrases} paraphrases passed"
        );
    }
}
