//! A subset of Go's `text/template`, as Docker's `--format` uses it, evaluated against a
//! `serde_json::Value`: fields (`{{.State.Status}}`, `{{.}}`), pipelines (`{{.Config | json}}`),
//! string and number literals, parentheses, `{{-`/`-}}` trimming, and the functions `json`,
//! `upper`, `lower`, `title`, `index`, `len`, `join`, `split`, `truncate`, `print`, `println`.
//! `{{.Label "k"}}` looks the key up in a `__labels` object when the value has one (`ps`).
//! No `range`/`if`/variables. Values print the way Go prints decoded JSON: strings bare,
//! integers without a fraction, arrays as `[a b]`, objects as `map[k:v]`, null as `<no value>`.

use serde_json::{Map, Value};

/// A template that cannot be parsed or evaluated, worded like Go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template: {}", self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>), // `.` is an empty path
    Str(String),
    Num(f64),
    Ident(String),
    Pipe,
    Open,
    Close,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Vec<Tok>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

/// Docker lets `\t` and `\n` be typed literally in `--format`.
pub fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

impl Template {
    /// Parse `src`.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut nodes = Vec::new();
        let mut rest = src;
        let mut trim_next_text = false;
        while let Some(start) = rest.find("{{") {
            let mut text = rest[..start].to_owned();
            if trim_next_text {
                text = text.trim_start().to_owned();
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return err(format!("unclosed action in {src:?}"));
            };
            let mut inner = &after[..end];
            if let Some(s) = inner.strip_prefix("- ") {
                inner = s;
                text = text.trim_end().to_owned();
            }
            trim_next_text = false;
            if let Some(s) = inner.strip_suffix(" -") {
                inner = s;
                trim_next_text = true;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text));
            }
            let inner = inner.trim();
            if inner.starts_with("/*") {
                // a comment
            } else {
                let toks = lex(inner)?;
                if toks.is_empty() {
                    return err(format!("missing value for command in {src:?}"));
                }
                if let Some(Tok::Ident(k)) = toks.first()
                    && matches!(
                        k.as_str(),
                        "range" | "if" | "with" | "end" | "else" | "define" | "template" | "block"
                    )
                {
                    return err(format!(
                        "{{{{{k}}}}} is not supported by berth's template subset"
                    ));
                }
                nodes.push(Node::Action(toks));
            }
            rest = &after[end + 2..];
        }
        let mut text = rest.to_owned();
        if trim_next_text {
            text = text.trim_start().to_owned();
        }
        if !text.is_empty() {
            nodes.push(Node::Text(text));
        }
        Ok(Template { nodes })
    }

    /// Evaluate against `v`.
    pub fn render(&self, v: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for n in &self.nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(toks) => {
                    let mut p = Parser {
                        toks,
                        pos: 0,
                        dot: v,
                    };
                    let val = p.pipeline()?;
                    if p.pos != toks.len() {
                        return err(format!("unexpected {:?} in action", toks[p.pos]));
                    }
                    out.push_str(&go_string(&val));
                }
            }
        }
        Ok(out)
    }
}

/// Parse and render in one go.
pub fn render(src: &str, v: &Value) -> Result<String, TemplateError> {
    Template::parse(src)?.render(v)
}

fn lex(s: &str) -> Result<Vec<Tok>, TemplateError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut toks = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b'(' => {
                toks.push(Tok::Open);
                i += 1;
            }
            b')' => {
                toks.push(Tok::Close);
                i += 1;
            }
            b'"' => {
                let mut out = String::new();
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < b.len() => {
                            out.push(match b[i + 1] {
                                b'n' => '\n',
                                b't' => '\t',
                                other => char::from(other),
                            });
                            i += 2;
                        }
                        _ => {
                            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                            out.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if !closed {
                    return err(format!("unterminated quoted string in {s:?}"));
                }
                toks.push(Tok::Str(out));
            }
            b'`' => {
                let Some(end) = s[i + 1..].find('`') else {
                    return err(format!("unterminated raw quoted string in {s:?}"));
                };
                toks.push(Tok::Str(s[i + 1..i + 1 + end].to_owned()));
                i += end + 2;
            }
            b'.' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                let path: Vec<String> = s[start..i]
                    .split('.')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                toks.push(Tok::Field(path));
            }
            b'0'..=b'9' | b'-' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let n: f64 = s[start..i]
                    .parse()
                    .map_err(|_| TemplateError(format!("bad number {:?}", &s[start..i])))?;
                toks.push(Tok::Num(n));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                toks.push(Tok::Ident(s[start..i].to_owned()));
            }
            _ => return err(format!("unexpected {:?} in {s:?}", char::from(c))),
        }
    }
    Ok(toks)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    dot: &'a Value,
}

impl Parser<'_> {
    fn pipeline(&mut self) -> Result<Value, TemplateError> {
        let mut val = self.command(None)?;
        while self.toks.get(self.pos) == Some(&Tok::Pipe) {
            self.pos += 1;
            val = self.command(Some(val))?;
        }
        Ok(val)
    }

    /// One command: a function with arguments, or a single operand (a field may take
    /// arguments when it is `.Label`). `piped` is appended as the last argument.
    fn command(&mut self, piped: Option<Value>) -> Result<Value, TemplateError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                let mut args = Vec::new();
                while let Some(t) = self.toks.get(self.pos) {
                    if matches!(t, Tok::Pipe | Tok::Close) {
                        break;
                    }
                    args.push(self.operand()?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                call(&name, args)
            }
            Some(Tok::Field(path)) if path.last().is_some_and(|l| l == "Label") => {
                self.pos += 1;
                let mut args = Vec::new();
                while let Some(t) = self.toks.get(self.pos) {
                    if matches!(t, Tok::Pipe | Tok::Close) {
                        break;
                    }
                    args.push(self.operand()?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                let base = lookup(self.dot, &path[..path.len() - 1])?;
                let key = match args.as_slice() {
                    [Value::String(k)] => k.clone(),
                    _ => return err("Label takes one string argument: {{.Label \"key\"}}"),
                };
                Ok(base
                    .get("__labels")
                    .and_then(|l| l.get(&key))
                    .cloned()
                    .unwrap_or_else(|| Value::String(String::new())))
            }
            Some(_) => {
                let v = self.operand()?;
                if piped.is_some() {
                    return err("a pipeline can only feed a function");
                }
                Ok(v)
            }
            None => err("missing value for command"),
        }
    }

    fn operand(&mut self) -> Result<Value, TemplateError> {
        let Some(t) = self.toks.get(self.pos).cloned() else {
            return err("missing operand");
        };
        self.pos += 1;
        match t {
            Tok::Field(path) => lookup(self.dot, &path).cloned(),
            Tok::Str(s) => Ok(Value::String(s)),
            Tok::Num(n) => Ok(num(n)),
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "nil" => Ok(Value::Null),
                _ => call(&name, Vec::new()),
            },
            Tok::Open => {
                let v = self.pipeline()?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return err("unclosed left paren");
                }
                self.pos += 1;
                Ok(v)
            }
            Tok::Pipe | Tok::Close => err(format!("unexpected {t:?}")),
        }
    }
}

fn num(n: f64) -> Value {
    #[allow(clippy::cast_possible_truncation)] // checked: integral and in range
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

fn lookup<'v>(v: &'v Value, path: &[String]) -> Result<&'v Value, TemplateError> {
    let mut cur = v;
    for (i, part) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => match m.get(part) {
                Some(x) => x,
                None => {
                    return err(format!(
                        "executing \"\" at <.{}>: map has no entry for key \"{part}\"",
                        path[..=i].join(".")
                    ));
                }
            },
            Value::Null => return Ok(&Value::Null),
            other => {
                return err(format!(
                    "executing \"\" at <.{}>: can't evaluate field {part} in type {}",
                    path[..=i].join("."),
                    go_type(other)
                ));
            }
        };
    }
    Ok(cur)
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn arg_str(f: &str, v: &Value) -> Result<String, TemplateError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => err(format!("{f}: invalid argument <nil>")),
        other => Ok(go_string(other)),
    }
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let want = |n: usize| -> Result<(), TemplateError> {
        if args.len() == n {
            Ok(())
        } else {
            err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        }
    };
    match name {
        "json" => {
            want(1)?;
            Ok(Value::String(
                serde_json::to_string(&args[0]).unwrap_or_default(),
            ))
        }
        "upper" => {
            want(1)?;
            Ok(Value::String(arg_str(name, &args[0])?.to_uppercase()))
        }
        "lower" => {
            want(1)?;
            Ok(Value::String(arg_str(name, &args[0])?.to_lowercase()))
        }
        "title" => {
            want(1)?;
            let s = arg_str(name, &args[0])?;
            let mut out = String::with_capacity(s.len());
            let mut start = true;
            for c in s.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = c.is_whitespace();
            }
            Ok(Value::String(out))
        }
        "len" => {
            want(1)?;
            let n = match &args[0] {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                other => return err(format!("len of type {}", go_type(other))),
            };
            Ok(Value::from(n))
        }
        "index" => {
            let Some((first, keys)) = args.split_first() else {
                return err("wrong number of args for index: want at least 1 got 0");
            };
            let mut cur = first.clone();
            for k in keys {
                cur = match (&cur, k) {
                    (Value::Object(m), Value::String(s)) => {
                        m.get(s).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n
                            .as_u64()
                            .and_then(|i| usize::try_from(i).ok())
                            .filter(|i| *i < a.len())
                            .ok_or_else(|| TemplateError(format!("index out of range: {n}")))?;
                        a[i].clone()
                    }
                    (Value::Null, _) => Value::Null,
                    (c, k) => {
                        return err(format!(
                            "can't index item of type {} with {}",
                            go_type(c),
                            go_string(k)
                        ));
                    }
                };
            }
            Ok(cur)
        }
        "join" => {
            want(2)?;
            let sep = arg_str(name, &args[1])?;
            match &args[0] {
                Value::Array(a) => Ok(Value::String(
                    a.iter().map(go_string).collect::<Vec<_>>().join(&sep),
                )),
                Value::Null => Ok(Value::String(String::new())),
                other => err(format!("join of type {}", go_type(other))),
            }
        }
        "split" => {
            want(2)?;
            let s = arg_str(name, &args[0])?;
            let sep = arg_str(name, &args[1])?;
            Ok(Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
            ))
        }
        "truncate" => {
            want(2)?;
            let s = arg_str(name, &args[0])?;
            let n = args[1]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| TemplateError("truncate: length must be a number".into()))?;
            Ok(Value::String(s.chars().take(n).collect()))
        }
        "print" | "println" => {
            let mut s = args.iter().map(go_string).collect::<Vec<_>>().join(" ");
            if name == "println" {
                s.push('\n');
            }
            Ok(Value::String(s))
        }
        _ => err(format!("function \"{name}\" not defined")),
    }
}

/// How Go's `fmt.Print` shows a value decoded from JSON.
pub fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    format!("{f:.0}")
                } else {
                    f.to_string()
                }
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(|x| match x {
                    Value::Null => "<nil>".to_owned(),
                    other => go_string(other),
                })
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Object(m) => go_map(m),
    }
}

fn go_map(m: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let v = match &m[k] {
                Value::Null => "<nil>".to_owned(),
                other => go_string(other),
            };
            format!("{k}:{v}")
        })
        .collect();
    format!("map[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "Id": "abc",
            "State": {"Status": "running", "Pid": 42, "Running": true, "ExitCode": 0},
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"k": "v", "a.b": "c"}, "Cmd": null},
            "NetworkSettings": {"IPAddress": ""},
            "Size": 1.5,
            "__labels": {"k": "v"},
        })
    }

    #[test]
    fn fields_nested_and_dot() {
        let v = doc();
        assert_eq!(render("{{.State.Status}}", &v).unwrap(), "running");
        assert_eq!(render("{{.State.Pid}}", &v).unwrap(), "42");
        assert_eq!(render("{{.State.Running}}", &v).unwrap(), "true");
        assert_eq!(
            render("[{{.NetworkSettings.IPAddress}}]", &v).unwrap(),
            "[]"
        );
        assert_eq!(render("{{.Size}}", &v).unwrap(), "1.5");
        assert_eq!(render("{{.Config.Cmd}}", &v).unwrap(), "<no value>");
        assert_eq!(render("{{.}}", &json!("x")).unwrap(), "x");
        assert_eq!(render("id={{ .Id }}!", &v).unwrap(), "id=abc!");
    }

    #[test]
    fn arrays_and_maps_print_like_go() {
        let v = doc();
        assert_eq!(render("{{.Config.Env}}", &v).unwrap(), "[A=1 B=2]");
        assert_eq!(render("{{.Config.Labels}}", &v).unwrap(), "map[a.b:c k:v]");
    }

    #[test]
    fn json_function_and_pipes() {
        let v = doc();
        assert_eq!(
            render("{{json .Config.Env}}", &v).unwrap(),
            r#"["A=1","B=2"]"#
        );
        assert_eq!(
            render("{{.Config.Env | json}}", &v).unwrap(),
            r#"["A=1","B=2"]"#
        );
        let all: Value = serde_json::from_str(&render("{{json .}}", &v).unwrap()).unwrap();
        assert_eq!(all, v);
        assert_eq!(render("{{json .State.Status}}", &v).unwrap(), "\"running\"");
    }

    #[test]
    fn index_upper_lower_join_len() {
        let v = doc();
        assert_eq!(render(r#"{{index .Config.Labels "k"}}"#, &v).unwrap(), "v");
        assert_eq!(
            render(r#"{{index .Config.Labels "a.b"}}"#, &v).unwrap(),
            "c"
        );
        assert_eq!(
            render(r#"{{index .Config.Labels "nope"}}"#, &v).unwrap(),
            "<no value>"
        );
        assert_eq!(render("{{index .Config.Env 1}}", &v).unwrap(), "B=2");
        assert_eq!(render("{{upper .State.Status}}", &v).unwrap(), "RUNNING");
        assert_eq!(render("{{.State.Status | upper}}", &v).unwrap(), "RUNNING");
        assert_eq!(render("{{lower (upper .Id)}}", &v).unwrap(), "abc");
        assert_eq!(
            render(r#"{{join .Config.Env ","}}"#, &v).unwrap(),
            "A=1,B=2"
        );
        assert_eq!(render("{{len .Config.Env}}", &v).unwrap(), "2");
        assert_eq!(
            render("{{title \"hello world\"}}", &v).unwrap(),
            "Hello World"
        );
    }

    #[test]
    fn label_method_and_trimming() {
        let v = doc();
        assert_eq!(render(r#"{{.Label "k"}}"#, &v).unwrap(), "v");
        assert_eq!(render(r#"{{.Label "missing"}}"#, &v).unwrap(), "");
        assert_eq!(render("a  {{- .Id -}}  b", &v).unwrap(), "aabcb");
        assert_eq!(render("{{/* note */}}x", &v).unwrap(), "x");
    }

    #[test]
    fn errors_are_reported() {
        let v = doc();
        assert!(render("{{.Nope}}", &v).is_err());
        assert!(render("{{.Id", &v).is_err());
        assert!(render("{{nosuchfunc .Id}}", &v).is_err());
        assert!(render("{{range .Config.Env}}x{{end}}", &v).is_err());
        assert!(render("{{.State.Status.Deeper}}", &v).is_err());
        assert!(render("{{\"open}}", &v).is_err());
        assert!(render("{{}}", &v).is_err());
    }
}
