//! Recursive descent over the non-trivia tokens. Every error becomes a diagnostic and the
//! parser resumes at the next statement keyword, so one run reports every problem and
//! never panics.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use vnet_core::mac::MacAddr;
use vnet_core::name::Name;
use vnet_core::rate::Rate;
use vnet_core::rule::{DstMatch, MacMatch};

use crate::ast::{
    Action, Block, Control, Description, Host, Iface, IfaceKind, Item, Link, LinkProto, Rule, Statement,
    Target,
};
use crate::lexer::{lex, unquote, Token, TokenKind};
use crate::source::{Diagnostic, Source, Span};

/// A tree and everything wrong with the text it came from.
#[derive(Debug)]
pub struct Parsed {
    /// The tree, with every statement that parsed.
    pub description: Description,
    /// Syntax errors, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses a description; never panics, whatever `src` holds.
pub fn parse(src: &str) -> Parsed {
    let tokens: Vec<Token> = lex(src).into_iter().filter(|t| !t.is_trivia()).collect();
    let mut p = Parser {
        src: Source::new(src),
        tokens,
        pos: 0,
        diagnostics: Vec::new(),
        words: Vec::new(),
    };
    let description = p.description();
    Parsed {
        description,
        diagnostics: p.diagnostics,
    }
}

/// Keywords that start a statement; the parser resumes at one after an error.
const STATEMENT_KEYWORDS: [&str; 7] = ["HOST", "ADD", "DELETE", "IFACE", "LINK", "FORWARD", "END"];
const MAC_EXAMPLE: &str = "a MAC address like 02:00:00:00:00:01";

/// The statement being parsed failed; its diagnostic is recorded.
struct Failed;

type Step<T> = Result<T, Failed>;

struct Parser<'a> {
    src: Source<'a>,
    tokens: Vec<Token>,
    pos: usize,
    diagnostics: Vec<Diagnostic>,
    /// Words of the statement being parsed.
    words: Vec<(String, Span)>,
}

/// Whether an unquoted word would start a statement (names spelled so are quoted).
pub fn is_statement_keyword(word: &str) -> bool {
    STATEMENT_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn looks_like_mac(text: &str) -> bool {
    text.contains(':') || text.split('-').count() == 6
}

impl<'a> Parser<'a> {
    fn peek_at(&self, ahead: usize) -> Option<Token> {
        self.tokens.get(self.pos + ahead).copied()
    }

    fn text(&self, t: Token) -> &'a str {
        t.text(self.src.text())
    }

    fn peek_keyword(&self, ahead: usize) -> Option<String> {
        self.peek_at(ahead)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| self.text(t).to_ascii_uppercase())
    }

    fn at_keyword(&self, kw: &str) -> bool {
        self.peek_keyword(0).as_deref() == Some(kw)
    }

    /// Where the next token is, or the end of the text.
    fn here(&self) -> Span {
        self.peek_at(0).map_or_else(
            || Span::new(self.src.text().len(), self.src.text().len()),
            |t| t.span,
        )
    }

    fn found(&self) -> String {
        match self.peek_at(0) {
            Some(t) => format!("found `{}`", self.text(t)),
            None => "found the end of the text".into(),
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>, expected: Option<&str>) {
        let d = self.src.error(span, message, expected.map(str::to_string));
        self.diagnostics.push(d);
    }

    /// Records "expected X, found Y" at the next token and fails.
    fn expected<T>(&mut self, what: &str) -> Step<T> {
        let message = format!("expected {what}, {}", self.found());
        self.error(self.here(), message, Some(what));
        Err(Failed)
    }

    /// Takes the next token as a value: a word, or a string's contents.
    fn value(&mut self, what: &str) -> Step<(String, Span)> {
        match self.peek_at(0) {
            Some(t) if t.kind == TokenKind::Unterminated => {
                self.error(t.span, "string without its closing quote", Some("`\"`"));
                self.pos += 1;
                Err(Failed)
            }
            Some(t) => {
                let text = self.text(t);
                let value = if t.kind == TokenKind::Str {
                    unquote(text)
                } else {
                    text.to_string()
                };
                self.pos += 1;
                self.words.push((value.clone(), t.span));
                Ok((value, t.span))
            }
            None => self.expected(what),
        }
    }

    fn keyword(&mut self, kw: &str) -> Step<()> {
        if self.at_keyword(kw) {
            self.value(kw).map(drop)
        } else {
            self.expected(&format!("`{kw}`"))
        }
    }

    /// A machine, interface or user name.
    fn name(&mut self, what: &str) -> Step<Name> {
        let keyword = self.peek_keyword(0).is_some_and(|k| is_statement_keyword(&k));
        if self.peek_at(0).is_none() || keyword {
            return self.expected(what);
        }
        let (text, span) = self.value(what)?;
        text.parse().map_err(|e| {
            self.error(span, format!("invalid {what}: {e}"), None);
            Failed
        })
    }

    /// A name the overlay keeps as text: a machine (also a host's address or SSH name),
    /// a user, a host's Ethernet interface or a key.
    fn text_name(&mut self, what: &str) -> Step<String> {
        self.name(what).map(String::from)
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Step<T> {
        if self.peek_at(0).is_none() {
            return self.expected(what);
        }
        let (text, span) = self.value(what)?;
        text.parse().map_err(|_| {
            self.error(span, format!("`{text}` is not a valid {what}"), Some(what));
            Failed
        })
    }

    fn mac(&mut self) -> Step<MacAddr> {
        if self.peek_at(0).is_none() {
            return self.expected(MAC_EXAMPLE);
        }
        let (text, span) = self.value(MAC_EXAMPLE)?;
        text.parse().map_err(|e| {
            self.error(span, format!("malformed MAC `{text}`: {e}"), Some(MAC_EXAMPLE));
            Failed
        })
    }

    fn next_is_mac(&self, ahead: usize) -> bool {
        self.peek_at(ahead)
            .is_some_and(|t| t.kind == TokenKind::Word && looks_like_mac(self.text(t)))
    }

    /// `ANY [mac]`, `NOT mac` or `mac`. Fig. 5 writes a MAC after every qualifier; after
    /// `ANY` it means nothing and is skipped when another address side follows it
    /// (`is_source`) or always (destination).
    fn side(&mut self, is_source: bool) -> Step<MacMatch> {
        match self.peek_keyword(0).as_deref() {
            Some("ANY") => {
                self.value("ANY")?;
                let mac_follows = self.next_is_mac(0)
                    && (!is_source
                        || self.next_is_mac(1)
                        || matches!(self.peek_keyword(1).as_deref(), Some("ANY" | "NOT" | "NONE")));
                if mac_follows {
                    self.mac()?;
                }
                Ok(MacMatch::Any)
            }
            Some("NOT") => {
                self.value("NOT")?;
                Ok(MacMatch::Not(self.mac()?))
            }
            Some("NONE") if is_source => {
                let span = self.here();
                self.error(
                    span,
                    "`NONE` is only valid as a destination (it makes the default rule)",
                    Some("ANY, NOT mac or a MAC address"),
                );
                Err(Failed)
            }
            _ if self.next_is_mac(0) => Ok(MacMatch::Exact(self.mac()?)),
            _ => self.expected(&format!(
                "ANY, NOT, {}",
                if is_source {
                    "or a MAC address"
                } else {
                    "NONE or a MAC address"
                }
            )),
        }
    }

    fn destination(&mut self) -> Step<DstMatch> {
        if self.at_keyword("NONE") {
            self.value("NONE")?;
            return Ok(DstMatch::None);
        }
        self.side(false).map(DstMatch::Mac)
    }

    /// Skips to the next statement keyword.
    fn recover(&mut self) {
        while let Some(kw) = self
            .peek_keyword(0)
            .or_else(|| self.peek_at(0).map(|_| String::new()))
        {
            if STATEMENT_KEYWORDS.contains(&kw.as_str()) {
                break;
            }
            self.pos += 1;
        }
    }

    /// Runs one statement parser, wrapping its result with its span and words.
    fn statement<T>(&mut self, parse: impl FnOnce(&mut Self) -> Step<T>) -> Option<Statement<T>> {
        self.words.clear();
        let start = self.here();
        let result = parse(self);
        let words = std::mem::take(&mut self.words);
        match result {
            Ok(decl) => {
                let end = words.last().map_or(start, |w| w.1);
                Some(Statement {
                    decl,
                    span: start.to(end),
                    words,
                })
            }
            Err(Failed) => {
                self.recover();
                None
            }
        }
    }

    fn description(&mut self) -> Description {
        let mut d = Description::default();
        if self.at_keyword("BEGIN") {
            self.pos += 1;
        } else {
            let _ = self.expected::<()>("`BEGIN`");
        }
        loop {
            let Some(kw) = self
                .peek_keyword(0)
                .or_else(|| self.peek_at(0).map(|_| String::new()))
            else {
                let _ = self.expected::<()>("`END`");
                break;
            };
            match kw.as_str() {
                "END" => {
                    self.pos += 1;
                    if self.peek_at(0).is_some() {
                        let span = self
                            .here()
                            .to(Span::new(self.src.text().len(), self.src.text().len()));
                        self.error(span, "text after `END`", Some("the end of the description"));
                    }
                    break;
                }
                "HOST" => {
                    if !d.blocks.is_empty() {
                        self.error(
                            self.here(),
                            "HOST after ADD or DELETE",
                            Some("hosts before the first ADD"),
                        );
                    }
                    if let Some(h) = self.statement(Self::host) {
                        d.hosts.push(h);
                    }
                }
                "ADD" | "DELETE" => {
                    self.pos += 1;
                    let action = if kw == "ADD" { Action::Add } else { Action::Delete };
                    d.blocks.push(Block {
                        action,
                        items: Vec::new(),
                    });
                }
                "IFACE" | "LINK" | "FORWARD" => {
                    if d.blocks.is_empty() {
                        self.error(
                            self.here(),
                            format!("`{kw}` outside a block"),
                            Some("`ADD` or `DELETE` first"),
                        );
                    }
                    let item = self.statement(Self::item);
                    match d.blocks.last_mut() {
                        Some(block) => block.items.extend(item),
                        // Recovery from the error above: the statement opens an ADD block.
                        None => d.blocks.push(Block {
                            action: Action::Add,
                            items: item.into_iter().collect(),
                        }),
                    }
                }
                _ => {
                    let _ = self.expected::<()>("HOST, ADD, DELETE, IFACE, LINK, FORWARD or END");
                    self.pos += 1;
                    self.recover();
                }
            }
        }
        d
    }

    fn host(&mut self) -> Step<Host> {
        self.keyword("HOST")?;
        let user = self.text_name("user name")?;
        self.keyword("AT")?;
        let machine = self.text_name("machine name")?;
        let port = self.number("port (1-65535)")?;
        let interface = self.text_name("interface name")?;
        let mut host = Host {
            user,
            machine,
            port,
            interface,
            address: None,
            control: None,
            key_file: None,
        };
        while let Some(kw) = self.peek_keyword(0) {
            let span = self.here();
            let duplicate = match kw.as_str() {
                "ADDRESS" => {
                    self.value("ADDRESS")?;
                    host.address
                        .replace(self.number::<IpAddr>("IP address")?)
                        .is_some()
                }
                "CONTROL" => {
                    self.value("CONTROL")?;
                    let (text, _) = self.value("a control socket path or ADDRESS:PORT")?;
                    let control = match text.parse::<SocketAddr>() {
                        Ok(addr) => {
                            self.keyword("TOKEN")?;
                            let (token, _) = self.value("the token file")?;
                            Control::Tcp {
                                addr,
                                token_file: PathBuf::from(token),
                            }
                        }
                        Err(_) => Control::Unix(PathBuf::from(text)),
                    };
                    host.control.replace(control).is_some()
                }
                "KEY" => {
                    self.value("KEY")?;
                    let (file, _) = self.value("the key file")?;
                    host.key_file.replace(PathBuf::from(file)).is_some()
                }
                _ => break,
            };
            if duplicate {
                self.error(span, format!("`{kw}` given twice"), Some("each option once"));
                return Err(Failed);
            }
        }
        Ok(host)
    }

    fn item(&mut self) -> Step<Item> {
        match self.peek_keyword(0).as_deref() {
            Some("IFACE") => self.iface().map(Item::Iface),
            Some("LINK") => self.link().map(Item::Link),
            _ => self.rule().map(Item::Rule),
        }
    }

    fn iface(&mut self) -> Step<Iface> {
        self.keyword("IFACE")?;
        let kind = match self.peek_keyword(0).as_deref() {
            Some("TAP") => IfaceKind::Tap,
            Some("ATTACH") => IfaceKind::Attach,
            _ => return self.expected("`TAP` or `ATTACH`"),
        };
        self.pos += 1;
        let machine = self.text_name("machine name")?;
        let name = self.name("interface name")?;
        let mut iface = Iface {
            machine,
            name,
            kind,
            mac: None,
            device: None,
            netns: None,
            mtu: None,
        };
        while let Some(kw) = self.peek_keyword(0) {
            let span = self.here();
            let duplicate = match kw.as_str() {
                "MAC" => {
                    self.value("MAC")?;
                    iface.mac.replace(self.mac()?).is_some()
                }
                "DEVICE" => {
                    self.value("DEVICE")?;
                    iface.device.replace(self.name("device name")?).is_some()
                }
                "NETNS" => {
                    self.value("NETNS")?;
                    iface.netns.replace(self.name("network namespace")?).is_some()
                }
                "MTU" => {
                    self.value("MTU")?;
                    iface.mtu.replace(self.number("MTU")?).is_some()
                }
                _ => break,
            };
            if duplicate {
                self.error(span, format!("`{kw}` given twice"), Some("each option once"));
                return Err(Failed);
            }
        }
        Ok(iface)
    }

    /// Two machine names of which `machine` must be one; returns the other.
    fn ends(&mut self, machine: &str, what: &str) -> Step<String> {
        let (a, b) = (self.text_name("machine name")?, self.text_name("machine name")?);
        let span = self.words[self.words.len() - 2]
            .1
            .to(self.words[self.words.len() - 1].1);
        if a == b {
            self.error(
                span,
                format!("{what} joins `{a}` to itself"),
                Some("two different machines"),
            );
            return Err(Failed);
        }
        if machine == a {
            Ok(b)
        } else if machine == b {
            Ok(a)
        } else {
            let expected = format!("`{machine}` as one of the two ends");
            self.error(
                span,
                format!("{what} of `{machine}` must start at `{machine}`"),
                Some(&expected),
            );
            Err(Failed)
        }
    }

    fn link(&mut self) -> Step<Link> {
        self.keyword("LINK")?;
        let proto = match self.peek_keyword(0).as_deref() {
            Some("TCP") => LinkProto::Tcp,
            Some("UDP") => LinkProto::Udp,
            Some("QUIC") => LinkProto::Quic,
            _ => return self.expected("`TCP`, `UDP` or `QUIC`"),
        };
        self.pos += 1;
        let owner = self.text_name("machine name")?;
        let peer = self.ends(&owner, "the link")?;
        let mut link = Link {
            owner,
            peer,
            proto,
            port: None,
            key: None,
            reserve: None,
            encrypt: false,
        };
        while let Some(kw) = self.peek_keyword(0) {
            let span = self.here();
            let duplicate = match kw.as_str() {
                "PORT" => {
                    self.value("PORT")?;
                    link.port.replace(self.number("port (1-65535)")?).is_some()
                }
                "KEY" => {
                    self.value("KEY")?;
                    link.key.replace(self.text_name("key name")?).is_some()
                }
                "RESERVE" => {
                    self.value("RESERVE")?;
                    let (text, span) = self.value("a rate like 50mbit")?;
                    let rate = match text.parse::<Rate>() {
                        Ok(rate) => rate,
                        Err(e) => {
                            self.error(span, e.to_string(), Some("a rate like 50mbit"));
                            return Err(Failed);
                        }
                    };
                    link.reserve.replace(rate).is_some()
                }
                "ENCRYPT" => {
                    self.pos += 1;
                    std::mem::replace(&mut link.encrypt, true)
                }
                _ => break,
            };
            if duplicate {
                self.error(span, format!("`{kw}` given twice"), Some("each option once"));
                return Err(Failed);
            }
        }
        Ok(link)
    }

    fn rule(&mut self) -> Step<Rule> {
        self.keyword("FORWARD")?;
        let is_edge = match self.peek_keyword(0).as_deref() {
            Some("EDGE") => true,
            Some("INTERFACE") => false,
            _ => return self.expected("`EDGE` or `INTERFACE`"),
        };
        self.pos += 1;
        let machine = self.text_name("machine name")?;
        let src = self.side(true)?;
        let dst = self.destination()?;
        let out = if is_edge {
            Target::Edge(self.ends(&machine, "the rule's edge")?)
        } else {
            Target::Iface(self.name("interface name")?)
        };
        Ok(Rule {
            machine,
            src,
            dst,
            out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fig5_example() {
        let p = parse(
            "begin host alice at h1 5000 eth0 host bob at proxy 5000 eth0 \
             add link tcp h1 h1 proxy \
             forward edge h1 02:00:00:00:00:01 not 02:00:00:00:00:02 h1 proxy \
             forward interface h1 any 00:00:00:00:00:00 02:00:00:00:00:01 eth0 end",
        );
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let items = &p.description.blocks[0].items;
        assert_eq!(items.len(), 3);
        let Item::Rule(r) = &items[2].decl else { panic!() };
        assert_eq!(r.src, MacMatch::Any);
        assert_eq!(
            r.dst,
            DstMatch::Mac(MacMatch::Exact("02:00:00:00:00:01".parse().unwrap()))
        );
    }

    #[test]
    fn a_statement_outside_a_block_is_reported_and_kept_in_an_add_block() {
        let p = parse("BEGIN\nLINK TCP h1 h1 h2\nIFACE TAP h1\nEND");
        let lines: Vec<(usize, usize)> = p.diagnostics.iter().map(|d| (d.line, d.column)).collect();
        // The LINK outside a block, then the IFACE missing its name (seen at END).
        assert_eq!(lines, vec![(2, 1), (4, 1)], "{:#?}", p.diagnostics);
        assert!(p.diagnostics[0].message.contains("`LINK` outside a block"));
        assert_eq!(p.description.blocks.len(), 1);
        assert_eq!(p.description.blocks[0].action, Action::Add);
        let items = &p.description.blocks[0].items;
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0].decl, Item::Link(_)));

        // A failed statement outside a block still opens the block.
        let p = parse("BEGIN\nIFACE TAP\nEND");
        assert_eq!(p.description.blocks.len(), 1);
        assert!(p.description.blocks[0].items.is_empty());
    }

    #[test]
    fn recovers_and_reports_every_error() {
        let src = "BEGIN\nHOST a AT h1 70000 eth0\nADD\nLINK TCP h1 h1\nFORWARD EDGE h1 ANY 02:00:00:zz:00:01 h1 h2\nEND";
        let p = parse(src);
        let lines: Vec<(usize, usize)> = p.diagnostics.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(lines, vec![(2, 14), (5, 1), (5, 21)], "{:#?}", p.diagnostics);
    }

    #[test]
    fn link_rates_follow_the_rate_grammar() {
        let link = |rate: &str| {
            parse(&format!(
                "BEGIN HOST a AT h1 5000 eth0 HOST b AT h2 5000 eth0 ADD LINK TCP h1 h1 h2 RESERVE {rate} END"
            ))
        };
        let p = link("1.5gbit");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let Item::Link(l) = &p.description.blocks[0].items[0].decl else {
            panic!()
        };
        assert_eq!(l.reserve, Some(Rate::from_bits_per_sec(1_500_000_000)));
        let p = link("50mb");
        assert_eq!(p.diagnostics.len(), 1, "{:?}", p.diagnostics);
        let d = &p.diagnostics[0];
        assert!(d.message.contains("`mb` is not a unit"), "{}", d.message);
        assert_eq!(d.expected.as_deref(), Some("a rate like 50mbit"));
    }
}
