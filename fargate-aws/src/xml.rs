//! [`Element`]: a small tree of an XML answer (EC2's query protocol answers in XML).
//!
//! Built with `xmlparser`'s tokenizer (already in the SDK's dependency tree), without
//! recursion; namespaces are ignored (elements are matched by their local name).

use std::fmt;

/// One element: its local name, its text (for leaves) and its child elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) children: Vec<Element>,
}

/// Why a document could not be read.
#[derive(Debug)]
pub(crate) struct XmlError(String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed XML answer: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

impl Element {
    /// The root element of `doc`.
    pub(crate) fn parse(doc: &str) -> Result<Element, XmlError> {
        use xmlparser::{ElementEnd, Token, Tokenizer};
        // The open elements, innermost last; the root is the first one closed at depth 0.
        let mut open: Vec<Element> = Vec::new();
        for token in Tokenizer::from(doc) {
            match token.map_err(|e| XmlError(e.to_string()))? {
                Token::ElementStart { local, .. } => open.push(Element {
                    name: local.as_str().to_owned(),
                    ..Element::default()
                }),
                Token::ElementEnd { end, .. } => match end {
                    ElementEnd::Open => {}
                    ElementEnd::Close(_, local) => {
                        let done = open
                            .pop()
                            .ok_or_else(|| XmlError(format!("</{}> closes nothing", local)))?;
                        if done.name != local.as_str() {
                            return Err(XmlError(format!(
                                "</{}> closes <{}>",
                                local.as_str(),
                                done.name
                            )));
                        }
                        match open.last_mut() {
                            Some(parent) => parent.children.push(done),
                            None => return Ok(done),
                        }
                    }
                    ElementEnd::Empty => {
                        let done = open
                            .pop()
                            .ok_or_else(|| XmlError("an empty element outside any".into()))?;
                        match open.last_mut() {
                            Some(parent) => parent.children.push(done),
                            None => return Ok(done),
                        }
                    }
                },
                Token::Text { text } => {
                    if let Some(current) = open.last_mut() {
                        current.text.push_str(&unescape(text.as_str())?);
                    }
                }
                Token::Cdata { text, .. } => {
                    if let Some(current) = open.last_mut() {
                        current.text.push_str(text.as_str());
                    }
                }
                _ => {}
            }
        }
        Err(XmlError("the document ends before its root element".into()))
    }

    /// The first child named `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at `path` (child names, outermost first) below this one.
    pub(crate) fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }

    /// The trimmed text of the element at `path`, when it exists and is not empty.
    pub(crate) fn text_at(&self, path: &[&str]) -> Option<&str> {
        let text = self.at(path)?.text.trim();
        (!text.is_empty()).then_some(text)
    }

    /// The `<item>` elements of the list at `path` (EC2's lists are `<xSet><item>...`).
    pub(crate) fn items<'a>(&'a self, path: &[&str]) -> impl Iterator<Item = &'a Element> + 'a {
        self.at(path)
            .into_iter()
            .flat_map(|set| set.children.iter().filter(|c| c.name == "item"))
    }

    /// Every element named `name` at any depth below this one, in document order.
    pub(crate) fn descendants<'a>(&'a self, name: &'a str) -> Vec<&'a Element> {
        let mut found = Vec::new();
        let mut stack: Vec<&Element> = self.children.iter().rev().collect();
        while let Some(e) = stack.pop() {
            if e.name == name {
                found.push(e);
            }
            stack.extend(e.children.iter().rev());
        }
        found
    }
}

/// Replaces XML's five named entities and character references.
fn unescape(text: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| XmlError(format!("an unterminated entity in {text:?}")))?;
        let entity = &after[..semi];
        let ch = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| XmlError(format!("an unknown entity &{entity};")))?
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENI: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>a1b2</requestId>
    <networkInterfaceSet>
        <item>
            <networkInterfaceId>eni-1</networkInterfaceId>
            <association>
                <publicIp>203.0.113.7</publicIp>
            </association>
            <tagSet/>
        </item>
        <item><networkInterfaceId>eni-2</networkInterfaceId></item>
    </networkInterfaceSet>
</DescribeNetworkInterfacesResponse>"#;

    #[test]
    fn reads_lists_paths_and_text() {
        let root = Element::parse(ENI).unwrap();
        assert_eq!(root.name, "DescribeNetworkInterfacesResponse");
        assert_eq!(root.text_at(&["requestId"]), Some("a1b2"));
        let items: Vec<_> = root.items(&["networkInterfaceSet"]).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].text_at(&["association", "publicIp"]),
            Some("203.0.113.7")
        );
        assert_eq!(items[1].text_at(&["association", "publicIp"]), None);
        assert_eq!(root.descendants("networkInterfaceId").len(), 2);
        assert_eq!(root.at(&["networkInterfaceSet", "nothing"]), None);
    }

    #[test]
    fn unescapes_entities_and_refuses_broken_documents() {
        let root = Element::parse("<E><M>a &lt;b&gt; &amp; &#39;c&#x27; &quot;</M></E>").unwrap();
        assert_eq!(root.text_at(&["M"]), Some("a <b> & 'c' \""));
        assert!(Element::parse("<A><B></A>").is_err());
        assert!(Element::parse("<A>").is_err());
        assert!(Element::parse("<A>&bogus;</A>").is_err());
        assert!(Element::parse("").is_err());
    }
}
