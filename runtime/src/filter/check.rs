//! Filters checked against the events the app's modules declare, at load.
//!
//! A filter that names an attribute events do not have (`event.sevrity`),
//! a field no event carries (`event.fields.usr`), a kind no module
//! declares (`event.kind == "SSHDLoginFailure"`), or compares a field with
//! a value of another type (`event.fields.failures > "2"`) compiles, and at
//! run time selects nothing: every event gives the filter an error, which
//! is counted and treated as false. Such filters are refused at load, with
//! what is wrong.
//!
//! A field that only some kinds carry may be read where the expression
//! makes sure the event has it: beside `has(event.fields.NAME)` or a kind
//! test that picks kinds carrying it, joined with `&&` (either side: CEL's
//! `&&` and `||` are false, or true, whatever errors the other side
//! gives), after `!has(...) ||`, or in a branch of `?:` that such a test
//! guards.

use crate::types::{EventDecl, ValueType};
use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, operators};
use std::collections::{BTreeMap, BTreeSet};

/// The attributes every event has, and their types.
const ATTRIBUTES: [(&str, Type); 6] = [
    ("kind", Type::String),
    ("module", Type::String),
    ("severity", Type::String),
    ("summary", Type::String),
    ("time", Type::Number),
    ("fields", Type::Other),
];

/// The severities' names.
const SEVERITIES: [&str; 3] = ["info", "warning", "error"];

/// What events a filter may see: every kind the app's modules declare
/// (and the host's own), with their fields, and the instances' names.
#[derive(Debug, Default)]
pub struct KnownEvents {
    /// Kind → field name → type.
    kinds: BTreeMap<String, BTreeMap<String, ValueType>>,
    /// Names an event's `module` may have.
    modules: BTreeSet<String>,
}

impl KnownEvents {
    /// Events declared by `decls` (a module's descriptor, or the host's).
    pub fn declare<'a>(&mut self, decls: impl IntoIterator<Item = &'a EventDecl>) {
        for decl in decls {
            let fields = self.kinds.entry(decl.kind.clone()).or_default();
            for field in &decl.fields {
                fields.insert(field.name.clone(), field.value_type);
            }
        }
    }

    /// An instance that events may name as their `module`.
    pub fn instance(&mut self, name: &str) {
        self.modules.insert(name.to_owned());
    }

    /// Every problem of the filter `expression`, in the order found.
    pub fn problems(&self, expression: &IdedExpr) -> Vec<String> {
        let mut checker = Checker {
            known: self,
            problems: Vec::new(),
        };
        checker.visit(expression, &Narrowed::default());
        let mut seen = BTreeSet::new();
        checker
            .problems
            .retain(|problem| seen.insert(problem.clone()));
        checker.problems
    }

    fn kinds_with(&self, field: &str) -> Vec<&str> {
        self.kinds
            .iter()
            .filter(|(_, fields)| fields.contains_key(field))
            .map(|(kind, _)| kind.as_str())
            .collect()
    }
}

/// What a value is, as far as checking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Type {
    Number,
    String,
    Boolean,
    /// A map, a list, null, bytes, or not known.
    Other,
}

impl Type {
    fn of(value_type: ValueType) -> Type {
        match value_type {
            // Timestamps are seconds since the epoch in filters.
            ValueType::Integer | ValueType::Float | ValueType::Timestamp => Type::Number,
            ValueType::Text | ValueType::Email => Type::String,
            ValueType::Boolean => Type::Boolean,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Type::Number => "a number",
            Type::String => "a string",
            Type::Boolean => "a boolean",
            Type::Other => "a value",
        }
    }
}

/// What the expression around a part has made sure of: the kinds the
/// event may be (all when `None`) and may not be, and fields it has.
#[derive(Debug, Clone, Default)]
struct Narrowed {
    kinds: Option<BTreeSet<String>>,
    excluded: BTreeSet<String>,
    has: BTreeSet<String>,
}

impl Narrowed {
    /// Both this and `other` hold.
    fn and(&self, other: &Narrowed) -> Narrowed {
        let kinds = match (&self.kinds, &other.kinds) {
            (Some(a), Some(b)) => Some(a.intersection(b).cloned().collect()),
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (None, None) => None,
        };
        Narrowed {
            kinds,
            excluded: self.excluded.union(&other.excluded).cloned().collect(),
            has: self.has.union(&other.has).cloned().collect(),
        }
    }

    fn kinds(kinds: BTreeSet<String>) -> Narrowed {
        Narrowed {
            kinds: Some(kinds),
            ..Narrowed::default()
        }
    }

    fn excluding(kinds: BTreeSet<String>) -> Narrowed {
        Narrowed {
            excluded: kinds,
            ..Narrowed::default()
        }
    }
}

struct Checker<'a> {
    known: &'a KnownEvents,
    problems: Vec<String>,
}

/// `event.NAME`: the name.
fn attribute(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Select(select)
            if !select.test
                && matches!(&select.operand.expr, Expr::Ident(name) if name == "event") =>
        {
            Some(&select.field)
        }
        _ => None,
    }
}

/// `event.fields.NAME` (or `has(event.fields.NAME)`): the name, and
/// whether it is a `has` test.
fn field(expr: &IdedExpr) -> Option<(&str, bool)> {
    match &expr.expr {
        Expr::Select(select) if attribute(&select.operand) == Some("fields") => {
            Some((&select.field, select.test))
        }
        _ => None,
    }
}

fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(text)) => Some(text.inner()),
        _ => None,
    }
}

/// A call's arguments, with its target first if it has one.
fn operands(call: &CallExpr) -> impl Iterator<Item = &IdedExpr> {
    call.target.as_deref().into_iter().chain(&call.args)
}

/// The two operands of a binary operator.
fn pair(call: &CallExpr) -> Option<(&IdedExpr, &IdedExpr)> {
    match call.args.as_slice() {
        [left, right] if call.target.is_none() => Some((left, right)),
        _ => None,
    }
}

/// What holds wherever `expr` is true.
fn when_true(expr: &IdedExpr) -> Narrowed {
    let mut narrowed = Narrowed::default();
    match &expr.expr {
        Expr::Select(_) => {
            if let Some((name, true)) = field(expr) {
                narrowed.has.insert(name.to_owned());
            }
        }
        Expr::Call(call) => match call.func_name.as_str() {
            operators::LOGICAL_AND => {
                if let Some((left, right)) = pair(call) {
                    return when_true(left).and(&when_true(right));
                }
            }
            operators::LOGICAL_NOT => {
                if let Some(inner) = call.args.first() {
                    return when_false(inner);
                }
            }
            operators::EQUALS => {
                if let Some(kind) = pair(call).and_then(|(left, right)| kind_test(left, right)) {
                    return Narrowed::kinds(BTreeSet::from([kind.to_owned()]));
                }
            }
            operators::NOT_EQUALS => {
                if let Some(kind) = pair(call).and_then(|(left, right)| kind_test(left, right)) {
                    return Narrowed::excluding(BTreeSet::from([kind.to_owned()]));
                }
            }
            operators::IN => {
                if let Some(kinds) = kinds_listed(call) {
                    return Narrowed::kinds(kinds);
                }
            }
            _ => {}
        },
        _ => {}
    }
    narrowed
}

/// What holds wherever `expr` is false.
fn when_false(expr: &IdedExpr) -> Narrowed {
    if let Expr::Call(call) = &expr.expr {
        match call.func_name.as_str() {
            operators::LOGICAL_OR => {
                if let Some((left, right)) = pair(call) {
                    return when_false(left).and(&when_false(right));
                }
            }
            operators::LOGICAL_NOT => {
                if let Some(inner) = call.args.first() {
                    return when_true(inner);
                }
            }
            operators::NOT_EQUALS => {
                if let Some(kind) = pair(call).and_then(|(left, right)| kind_test(left, right)) {
                    return Narrowed::kinds(BTreeSet::from([kind.to_owned()]));
                }
            }
            operators::EQUALS => {
                if let Some(kind) = pair(call).and_then(|(left, right)| kind_test(left, right)) {
                    return Narrowed::excluding(BTreeSet::from([kind.to_owned()]));
                }
            }
            operators::IN => {
                if let Some(kinds) = kinds_listed(call) {
                    return Narrowed::excluding(kinds);
                }
            }
            _ => {}
        }
    }
    Narrowed::default()
}

/// `event.kind in ["A", "B"]`: the kinds.
fn kinds_listed(call: &CallExpr) -> Option<BTreeSet<String>> {
    let (left, right) = pair(call)?;
    if attribute(left) != Some("kind") {
        return None;
    }
    let Expr::List(list) = &right.expr else {
        return None;
    };
    list.elements
        .iter()
        .map(|element| string_literal(element).map(str::to_owned))
        .collect()
}

/// `event.kind` against a string literal, either way round: the kind.
fn kind_test<'e>(left: &'e IdedExpr, right: &'e IdedExpr) -> Option<&'e str> {
    if attribute(left) == Some("kind") {
        string_literal(right)
    } else if attribute(right) == Some("kind") {
        string_literal(left)
    } else {
        None
    }
}

impl Checker<'_> {
    /// Check `expr` where `narrowed` holds; its type.
    fn visit(&mut self, expr: &IdedExpr, narrowed: &Narrowed) -> Type {
        match &expr.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => {
                    Type::Number
                }
                LiteralValue::String(_) => Type::String,
                LiteralValue::Boolean(_) => Type::Boolean,
                LiteralValue::Bytes(_) | LiteralValue::Null => Type::Other,
            },
            Expr::Select(select) => {
                if let Some(name) = attribute(expr) {
                    return self.attribute(name);
                }
                if let Some((name, test)) = field(expr) {
                    return self.field(name, test, narrowed);
                }
                self.visit(&select.operand, narrowed);
                Type::Other
            }
            Expr::Call(call) => self.call(call, narrowed),
            Expr::Comprehension(comprehension) => {
                for part in [
                    &comprehension.iter_range,
                    &comprehension.accu_init,
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ] {
                    self.visit(part, narrowed);
                }
                Type::Other
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.visit(element, narrowed);
                }
                Type::Other
            }
            Expr::Map(_) | Expr::Struct(_) | Expr::Ident(_) | Expr::Unspecified => Type::Other,
        }
    }

    fn attribute(&mut self, name: &str) -> Type {
        match ATTRIBUTES.iter().find(|(attribute, _)| *attribute == name) {
            Some((_, found)) => *found,
            None => {
                self.problems.push(format!(
                    "reads `event.{name}`, which events do not have (they have kind, module, severity, summary, time and fields)"
                ));
                Type::Other
            }
        }
    }

    fn field(&mut self, name: &str, test: bool, narrowed: &Narrowed) -> Type {
        let carrying = self.known.kinds_with(name);
        if carrying.is_empty() {
            let mut all: BTreeSet<&str> = BTreeSet::new();
            for fields in self.known.kinds.values() {
                all.extend(fields.keys().map(String::as_str));
            }
            let all: Vec<&str> = all.into_iter().collect();
            self.problems.push(format!(
                "reads `event.fields.{name}`, which no event of this app carries (their fields: {})",
                if all.is_empty() { "none".to_owned() } else { all.join(", ") }
            ));
            return Type::Other;
        }
        if test {
            return Type::Boolean;
        }
        let candidates: Vec<&str> = self
            .known
            .kinds
            .keys()
            .map(String::as_str)
            .filter(|kind| {
                narrowed
                    .kinds
                    .as_ref()
                    .is_none_or(|kinds| kinds.contains(*kind))
            })
            .filter(|kind| !narrowed.excluded.contains(*kind))
            .collect();
        let type_among = |kinds: &[&str]| {
            let types: BTreeSet<Type> = kinds
                .iter()
                .filter_map(|kind| self.known.kinds.get(*kind)?.get(name))
                .map(|value_type| Type::of(*value_type))
                .collect();
            match types.iter().next() {
                Some(found) if types.len() == 1 => *found,
                _ => Type::Other,
            }
        };
        let lacking: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|kind| {
                self.known
                    .kinds
                    .get(*kind)
                    .is_some_and(|fields| !fields.contains_key(name))
            })
            .collect();
        if !lacking.is_empty() && !narrowed.has.contains(name) {
            if narrowed.kinds.is_some() && lacking.len() == candidates.len() {
                self.problems.push(format!(
                    "reads `event.fields.{name}` of {}, which {} no such field (it is a field of {})",
                    lacking.join(", "),
                    if lacking.len() == 1 { "has" } else { "have" },
                    carrying.join(", ")
                ));
                return Type::Other;
            }
            // An example for the hint: a module's kind rather than the
            // host's.
            let example = carrying
                .iter()
                .find(|kind| **kind != crate::host::DISABLED_KIND)
                .or(carrying.first())
                .copied()
                .unwrap_or_default();
            self.problems.push(format!(
                "reads `event.fields.{name}`, which only {} carry: guard it, as in `has(event.fields.{name}) && ...` or `event.kind == \"{example}\" && ...`",
                carrying.join(", "),
            ));
            return type_among(&carrying);
        }
        type_among(&candidates)
    }

    fn call(&mut self, call: &CallExpr, narrowed: &Narrowed) -> Type {
        match call.func_name.as_str() {
            operators::LOGICAL_AND | operators::LOGICAL_OR => {
                let Some((left, right)) = pair(call) else {
                    return self.visit_all(call, narrowed);
                };
                // Either side may make the other safe (see the module's
                // text).
                let guard = |side: &IdedExpr| {
                    if call.func_name == operators::LOGICAL_AND {
                        when_true(side)
                    } else {
                        when_false(side)
                    }
                };
                self.visit(left, &narrowed.and(&guard(right)));
                self.visit(right, &narrowed.and(&guard(left)));
                Type::Boolean
            }
            operators::CONDITIONAL => {
                if let [condition, then, otherwise] = call.args.as_slice() {
                    self.visit(condition, narrowed);
                    let then = self.visit(then, &narrowed.and(&when_true(condition)));
                    let otherwise = self.visit(otherwise, &narrowed.and(&when_false(condition)));
                    return if then == otherwise { then } else { Type::Other };
                }
                self.visit_all(call, narrowed)
            }
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => {
                let Some((left, right)) = pair(call) else {
                    return self.visit_all(call, narrowed);
                };
                let left_type = self.visit(left, narrowed);
                let right_type = self.visit(right, narrowed);
                if left_type != Type::Other && right_type != Type::Other && left_type != right_type
                {
                    self.problems.push(format!(
                        "compares {} ({}) with {} ({}), which are never equal and have no order",
                        describe(left),
                        left_type.name(),
                        describe(right),
                        right_type.name()
                    ));
                }
                self.literal_values(left, right);
                self.literal_values(right, left);
                Type::Boolean
            }
            operators::IN => {
                if let Some((left, right)) = pair(call)
                    && let Expr::List(list) = &right.expr
                {
                    for element in &list.elements {
                        self.literal_values(left, element);
                    }
                }
                self.visit_all(call, narrowed);
                Type::Boolean
            }
            operators::LOGICAL_NOT => {
                self.visit_all(call, narrowed);
                Type::Boolean
            }
            _ => self.visit_all(call, narrowed),
        }
    }

    fn visit_all(&mut self, call: &CallExpr, narrowed: &Narrowed) -> Type {
        for operand in operands(call) {
            self.visit(operand, narrowed);
        }
        Type::Other
    }

    /// `attribute` compared with `value`: a kind, module or severity that
    /// cannot be.
    fn literal_values(&mut self, attribute_side: &IdedExpr, value: &IdedExpr) {
        let (Some(name), Some(value)) = (attribute(attribute_side), string_literal(value)) else {
            return;
        };
        let known = self.known;
        let (exists, choices): (bool, Vec<&str>) = match name {
            "kind" => (
                known.kinds.contains_key(value),
                known.kinds.keys().map(String::as_str).collect(),
            ),
            "module" => (
                known.modules.contains(value),
                known.modules.iter().map(String::as_str).collect(),
            ),
            "severity" => (SEVERITIES.contains(&value), SEVERITIES.to_vec()),
            _ => return,
        };
        if !exists {
            let what = match name {
                "kind" => "no module of this app declares events of kind",
                "module" => "no instance of this app is named",
                _ => "no severity is named",
            };
            self.problems.push(format!(
                "tests `event.{name}` against \"{value}\", but {what} \"{value}\" (known: {})",
                choices.join(", ")
            ));
        }
    }
}

/// A short text for an operand in a message.
fn describe(expr: &IdedExpr) -> String {
    if let Some(name) = attribute(expr) {
        return format!("`event.{name}`");
    }
    if let Some((name, _)) = field(expr) {
        return format!("`event.fields.{name}`");
    }
    match &expr.expr {
        Expr::Literal(LiteralValue::String(text)) => format!("{:?}", text.inner()),
        Expr::Literal(LiteralValue::Int(value)) => value.inner().to_string(),
        Expr::Literal(LiteralValue::Boolean(value)) => value.inner().to_string(),
        _ => "a value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;
    use crate::types::{FieldDecl, Severity};

    fn decl(kind: &str, fields: &[(&str, ValueType)]) -> EventDecl {
        EventDecl {
            kind: kind.into(),
            severity: Severity::Info,
            description: String::new(),
            fields: fields
                .iter()
                .map(|(name, value_type)| FieldDecl {
                    name: (*name).into(),
                    value_type: *value_type,
                    description: String::new(),
                })
                .collect(),
        }
    }

    fn known() -> KnownEvents {
        let mut known = KnownEvents::default();
        known.declare(&[
            decl(
                "LoginFailed",
                &[("user", ValueType::Text), ("failures", ValueType::Integer)],
            ),
            decl("LoginSucceeded", &[("user", ValueType::Text)]),
            decl("Stats", &[("sessions", ValueType::Integer)]),
        ]);
        known.instance("OpenSSH");
        known
    }

    fn problems(source: &str) -> Vec<String> {
        Filter::compile(source)
            .expect("compiles")
            .problems(&known())
    }

    #[test]
    fn filters_that_can_select_are_accepted() {
        for source in [
            r#"event.severity == "error""#,
            r#"event.kind == "Stats""#,
            r#"event.kind in ["LoginFailed", "Stats"] && event.module == "OpenSSH""#,
            r#"has(event.fields.user) && event.fields.user == "root""#,
            r#"event.fields.user == "root" && has(event.fields.user)"#,
            r#"event.kind == "LoginFailed" && event.fields.failures > 2"#,
            r#"event.kind in ["LoginFailed", "LoginSucceeded"] && event.fields.user.startsWith("r")"#,
            r#"!has(event.fields.user) || event.fields.user != "root""#,
            r#"event.kind != "LoginFailed" || event.fields.failures >= 3"#,
            r#"has(event.fields.failures) ? event.fields.failures > 2.5 : true"#,
            r#"event.time > 1700000000 && event.summary.contains("x")"#,
            "true",
        ] {
            assert_eq!(problems(source), Vec::<String>::new(), "{source}");
        }
    }

    #[test]
    fn filters_that_select_nothing_say_why() {
        let cases = [
            (
                r#"event.sevrity == "error""#,
                "reads `event.sevrity`, which events do not have (they have kind, module, severity, summary, time and fields)",
            ),
            (
                r#"has(event.fields.usr)"#,
                "reads `event.fields.usr`, which no event of this app carries (their fields: failures, sessions, user)",
            ),
            (
                r#"event.kind == "LoginFailure""#,
                r#"tests `event.kind` against "LoginFailure", but no module of this app declares events of kind "LoginFailure" (known: LoginFailed, LoginSucceeded, Stats)"#,
            ),
            (
                r#"event.kind in ["Stats", "Stat"]"#,
                r#"tests `event.kind` against "Stat", but no module of this app declares events of kind "Stat" (known: LoginFailed, LoginSucceeded, Stats)"#,
            ),
            (
                r#"event.module == "openssh""#,
                r#"tests `event.module` against "openssh", but no instance of this app is named "openssh" (known: OpenSSH)"#,
            ),
            (
                r#"event.severity == "warn""#,
                r#"tests `event.severity` against "warn", but no severity is named "warn" (known: info, warning, error)"#,
            ),
            (
                r#"event.kind == "LoginFailed" && event.fields.failures > "2""#,
                r#"compares `event.fields.failures` (a number) with "2" (a string), which are never equal and have no order"#,
            ),
            (
                r#"event.kind == "Stats" && event.fields.user == "root""#,
                "reads `event.fields.user` of Stats, which has no such field (it is a field of LoginFailed, LoginSucceeded)",
            ),
            (
                r#"event.fields.user == "root""#,
                r#"reads `event.fields.user`, which only LoginFailed, LoginSucceeded carry: guard it, as in `has(event.fields.user) && ...` or `event.kind == "LoginFailed" && ...`"#,
            ),
            (
                // The right side is read for Stats events only.
                r#"event.kind != "Stats" || event.fields.user == "root""#,
                "reads `event.fields.user` of Stats, which has no such field (it is a field of LoginFailed, LoginSucceeded)",
            ),
        ];
        for (source, problem) in cases {
            assert_eq!(problems(source), [problem], "{source}");
        }
        // Every problem, once each.
        assert_eq!(
            problems(r#"event.sevrity == "x" || event.sevrity == "y" || event.fields.usr == 1"#)
                .len(),
            2
        );
    }
}
