use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

fn vars() -> Value {
    json!({
        "text": "Hello World",
        "branch": "deep",
        "n": 7,
        "x": 2.5,
        "flag": true,
        "none": null,
        "tags": ["a", "b", 3],
        "doc": {"meta": {"lang": "en", "pages": 12}, "title": "T"},
    })
}

fn ev(src: &str) -> Value {
    Rule::parse(src)
        .unwrap_or_else(|e| panic!("parse {src:?}: {e}"))
        .eval(&vars())
        .unwrap_or_else(|e| panic!("eval {src:?}: {e}"))
}

fn parse_err(src: &str) -> RuleError {
    match Rule::parse(src) {
        Ok(_) => panic!("{src:?} should not parse"),
        Err(e) => e,
    }
}

fn eval_err(src: &str) -> RuleError {
    let rule = Rule::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
    match rule.eval(&vars()) {
        Ok(v) => panic!("{src:?} should fail, got {v}"),
        Err(e) => e,
    }
}

/// Runs `f` and asserts it finishes quickly.
fn fast<T>(f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    out
}

#[test]
fn issue_examples() {
    let router = Rule::parse("len(text)>2000 ? 'deep' : 'shallow'").unwrap();
    assert_eq!(
        router.eval(&json!({"text": "short"})).unwrap(),
        json!("shallow")
    );
    let long = "x".repeat(2001);
    assert_eq!(router.eval(&json!({"text": long})).unwrap(), json!("deep"));
    let when = Rule::parse("branch=='deep'").unwrap();
    assert!(when.eval_bool(&json!({"branch": "deep"})).unwrap());
    assert!(!when.eval_bool(&json!({"branch": "shallow"})).unwrap());
}

#[test]
fn literals() {
    assert_eq!(ev("42"), json!(42));
    assert_eq!(ev("1.5"), json!(1.5));
    assert_eq!(ev("2e3"), json!(2000.0));
    assert_eq!(ev("'single'"), json!("single"));
    assert_eq!(ev("\"double\""), json!("double"));
    assert_eq!(
        ev(r#"'it\'s' + "\"q\"" + '\n\t\\'"#),
        json!("it's\"q\"\n\t\\")
    );
    assert_eq!(ev("'mixed \" quote'"), json!("mixed \" quote"));
    assert_eq!(ev("true"), json!(true));
    assert_eq!(ev("false"), json!(false));
    assert_eq!(ev("null"), json!(null));
    assert_eq!(ev("'héllo ✓'"), json!("héllo ✓"));
    // Integers are exact up to u64::MAX; larger literals are errors, never
    // silently floats.
    assert_eq!(ev("9223372036854775808"), json!(9223372036854775808u64));
    assert_eq!(ev("18446744073709551615"), json!(u64::MAX));
    assert!(matches!(
        parse_err("18446744073709551616"),
        RuleError::Syntax { column: 1, .. }
    ));
    assert_eq!(ev("-9223372036854775808"), json!(i64::MIN));
}

#[test]
fn variables_and_fields() {
    assert_eq!(ev("text"), json!("Hello World"));
    assert_eq!(ev("doc.meta.lang"), json!("en"));
    assert_eq!(ev("doc . meta . pages + 1"), json!(13));
    assert_eq!(ev("(doc.meta).lang"), json!("en"));
    assert_eq!(ev("none"), json!(null));
    let rule =
        Rule::parse("doc.meta.lang == 'en' && len(text) > n || flag ? x : doc.title").unwrap();
    assert_eq!(rule.variables(), ["doc", "flag", "n", "text", "x"]);
    assert!(Rule::parse("1 + 2").unwrap().variables().is_empty());
    // A function name can still be used as a variable name.
    assert_eq!(Rule::parse("len").unwrap().variables(), ["len"]);
}

#[test]
fn missing_variables_name_the_variable() {
    let e = eval_err("branch == 'deep' && missing > 1");
    assert_eq!(
        e,
        RuleError::MissingVariable {
            name: "missing".into(),
            column: 21
        }
    );
    assert!(e.to_string().contains("missing"));
    let e = eval_err("doc.meta.author");
    assert_eq!(
        e,
        RuleError::MissingVariable {
            name: "doc.meta.author".into(),
            column: 10
        }
    );
    // `vars` that is not an object: every variable is missing.
    let e = Rule::parse("text")
        .unwrap()
        .eval(&json!([1, 2]))
        .unwrap_err();
    assert!(matches!(e, RuleError::MissingVariable { ref name, column: 1 } if name == "text"));
}

#[test]
fn comparison() {
    assert_eq!(ev("n == 7"), json!(true));
    assert_eq!(ev("n == 7.0"), json!(true));
    assert_eq!(ev("n != 7"), json!(false));
    assert_eq!(ev("n < 8"), json!(true));
    assert_eq!(ev("n <= 7"), json!(true));
    assert_eq!(ev("n > 7"), json!(false));
    assert_eq!(ev("n >= 7.5"), json!(false));
    assert_eq!(ev("x > 2"), json!(true));
    assert_eq!(ev("'abc' < 'abd'"), json!(true));
    assert_eq!(ev("'b' >= 'a'"), json!(true));
    // Equality is total: values of different types are just unequal.
    assert_eq!(ev("none == null"), json!(true));
    assert_eq!(ev("n == '7'"), json!(false));
    assert_eq!(ev("tags == tags"), json!(true));
    assert_eq!(ev("doc.meta != null"), json!(true));
}

#[test]
fn boolean_logic() {
    assert_eq!(ev("flag && n > 1"), json!(true));
    assert_eq!(ev("flag && false"), json!(false));
    assert_eq!(ev("false || flag"), json!(true));
    assert_eq!(ev("false || false"), json!(false));
    assert_eq!(ev("!flag"), json!(false));
    assert_eq!(ev("!!flag"), json!(true));
    // Precedence: && binds tighter than ||.
    assert_eq!(ev("true || false && false"), json!(true));
    assert_eq!(ev("(true || false) && false"), json!(false));
    // Short-circuit: the right side is not evaluated.
    assert_eq!(ev("false && missing"), json!(false));
    assert_eq!(ev("true || missing"), json!(true));
}

#[test]
fn arithmetic_ops() {
    assert_eq!(ev("1 + 2 * 3"), json!(7));
    assert_eq!(ev("(1 + 2) * 3"), json!(9));
    assert_eq!(ev("10 - 4 - 3"), json!(3));
    assert_eq!(ev("7 / 2"), json!(3.5));
    assert_eq!(ev("8 / 2"), json!(4));
    assert_eq!(ev("7 % 3"), json!(1));
    assert_eq!(ev("x * 2"), json!(5.0));
    assert_eq!(ev("5.5 % 2"), json!(1.5));
    assert_eq!(ev("-n"), json!(-7));
    assert_eq!(ev("--n"), json!(7));
    assert_eq!(ev("-x + 1"), json!(-1.5));
    assert_eq!(ev("'a' + 'b' + text"), json!("abHello World"));
}

#[test]
fn arithmetic_errors() {
    let e = eval_err("n / 0");
    assert!(matches!(e, RuleError::Arithmetic { column: 3, .. }), "{e}");
    assert!(matches!(
        eval_err("n % 0"),
        RuleError::Arithmetic { column: 3, .. }
    ));
    assert!(matches!(eval_err("x / 0"), RuleError::Arithmetic { .. }));
    // The integer range is i64 and u64 together: −2⁶³ ..= 2⁶⁴−1.
    assert!(matches!(
        eval_err("18446744073709551615 + 1"),
        RuleError::Arithmetic { column: 22, .. }
    ));
    assert!(matches!(
        eval_err("-9223372036854775807 - 2"),
        RuleError::Arithmetic { .. }
    ));
    assert!(matches!(
        eval_err("4294967296 * 4294967296"),
        RuleError::Arithmetic { .. }
    ));
    assert!(matches!(
        eval_err("18446744073709551615 * 18446744073709551615"),
        RuleError::Arithmetic { .. }
    ));
    assert!(matches!(
        eval_err("-18446744073709551615"),
        RuleError::Arithmetic { .. }
    ));
    assert!(matches!(
        eval_err("0 - 18446744073709551615"),
        RuleError::Arithmetic { .. }
    ));
    assert!(matches!(
        eval_err("1e308 * 10"),
        RuleError::Arithmetic { .. }
    ));
    let e = eval_err("18446744073709551615 + 1");
    assert!(e.to_string().contains("integer overflow"), "{e}");
}

#[test]
fn integers_are_exact_across_i64_and_u64() {
    // Issue #11: no silent float, exact results within the range.
    assert_eq!(ev("9223372036854775807 + 1"), json!(9223372036854775808u64));
    assert_eq!(
        ev("18446744073709551614 + 1"),
        json!(18446744073709551615u64)
    );
    assert_eq!(
        ev("(-9223372036854775807 - 1) / -1"),
        json!(9223372036854775808u64)
    );
    assert_eq!(ev("(-9223372036854775807 - 1) % -1"), json!(0));
    assert_eq!(ev("18446744073709551615 - 18446744073709551614"), json!(1));
    assert_eq!(ev("-(-9223372036854775808)"), json!(9223372036854775808u64));
    assert_eq!(ev("7 / 2"), json!(3.5));
    assert_eq!(ev("8 / 2"), json!(4));
    // From JSON: a u64 variable stays an integer.
    let big = json!({"b": u64::MAX, "s": i64::MIN});
    let r = Rule::parse("b - 1").unwrap();
    assert_eq!(r.eval(&big).unwrap(), json!(u64::MAX - 1));
    assert!(Rule::parse("b + 1").unwrap().eval(&big).is_err());
    assert!(Rule::parse("s - 1").unwrap().eval(&big).is_err());
    assert_eq!(
        Rule::parse("b + s").unwrap().eval(&big).unwrap(),
        json!(i64::MAX as u64)
    );
}

#[test]
fn integer_and_float_comparisons_are_exact() {
    let t = |src: &str| ev(src) == json!(true);
    // 2⁵³ + 1 is not representable as a float: it is not equal to 2⁵³.
    assert!(!t("9007199254740993 == 9007199254740992.0"));
    assert!(t("9007199254740993 != 9007199254740992.0"));
    assert!(t("9007199254740993 > 9007199254740992.0"));
    assert!(t("9007199254740992.0 < 9007199254740993"));
    assert!(t("9007199254740992 == 9007199254740992.0"));
    assert!(t("100 == 1e2"));
    assert!(t("1 == 1.0"));
    assert!(!t("1 == 1.5"));
    assert!(t("1 < 1.5") && t("2 > 1.5") && t("-1 > -1.5") && t("-2 < -1.5"));
    // At the ends of the range.
    assert!(t("18446744073709551615 < 18446744073709551616.0"));
    assert!(!t("18446744073709551615 == 18446744073709551616.0"));
    assert!(t("-9223372036854775808 == -9223372036854775808.0"));
    assert!(t("-9223372036854775808 > -1e300"));
    assert!(t("18446744073709551615 < 1e300"));
    // u64 variables compare exactly too.
    let vars = json!({"b": u64::MAX, "f": 18446744073709551615.0f64});
    let eq = Rule::parse("b == f").unwrap();
    assert_eq!(eq.eval(&vars).unwrap(), json!(false));
    let lt = Rule::parse("b < f").unwrap();
    assert_eq!(lt.eval(&vars).unwrap(), json!(true));
    // Arrays and objects compare their numbers the same way, and
    // `contains` uses the same equality.
    assert!(t("contains(tags, 3.0)"));
    assert!(!t("contains(tags, 3.5)"));
    let vars = json!({"a": [1, {"b": 2}], "c": [1.0, {"b": 2.0}],
                      "d": [9007199254740993u64], "e": [9007199254740992.0]});
    assert_eq!(
        Rule::parse("a == c").unwrap().eval(&vars).unwrap(),
        json!(true)
    );
    assert_eq!(
        Rule::parse("d == e").unwrap().eval(&vars).unwrap(),
        json!(false)
    );
}

#[test]
fn ternary() {
    assert_eq!(ev("flag ? 'yes' : 'no'"), json!("yes"));
    assert_eq!(ev("!flag ? 'yes' : 'no'"), json!("no"));
    // Right-associative chains.
    assert_eq!(
        ev("n > 10 ? 'big' : n > 5 ? 'medium' : 'small'"),
        json!("medium")
    );
    // Nested in the middle.
    assert_eq!(ev("flag ? n > 1 ? 1 : 2 : 3"), json!(1));
    // Only the chosen branch is evaluated.
    assert_eq!(ev("flag ? 1 : missing"), json!(1));
    assert_eq!(ev("(flag ? 2 : 3) * 10"), json!(20));
}

#[test]
fn functions() {
    assert_eq!(ev("len(text)"), json!(11));
    assert_eq!(ev("len('héllo')"), json!(5));
    assert_eq!(ev("len(tags)"), json!(3));
    assert_eq!(ev("len(doc)"), json!(2));
    assert_eq!(ev("contains(text, 'World')"), json!(true));
    assert_eq!(ev("contains(text, 'world')"), json!(false));
    assert_eq!(ev("contains(lower(text), 'world')"), json!(true));
    assert_eq!(ev("contains(tags, 'b')"), json!(true));
    assert_eq!(ev("contains(tags, 3.0)"), json!(true));
    assert_eq!(ev("contains(tags, 'z')"), json!(false));
    assert_eq!(ev("starts_with(text, 'Hell')"), json!(true));
    assert_eq!(ev("starts_with(text, 'World')"), json!(false));
    assert_eq!(ev("lower(text)"), json!("hello world"));
    assert_eq!(ev("upper(text)"), json!("HELLO WORLD"));
    assert_eq!(ev("upper('straße')"), json!("STRASSE"));
    assert_eq!(ev("len( upper ( doc.title ) + 'x' )"), json!(2));
}

#[test]
fn type_errors() {
    let cases = [
        ("text > 1", 6),
        ("n + 'a'", 3),
        ("flag + 1", 6),
        ("!n", 2),
        ("-text", 1),
        ("n && flag", 1),
        ("false || n", 10),
        ("n ? 1 : 2", 1),
        ("len(n)", 1),
        ("len(null)", 1),
        ("contains(n, 1)", 1),
        ("contains(text, 1)", 1),
        ("starts_with(tags, 'a')", 1),
        ("lower(n)", 1),
        ("upper(tags)", 1),
        ("text.length", 6),
        ("doc.meta.lang.x", 15),
        ("tags < tags", 6),
        ("null < 1", 6),
    ];
    for (src, column) in cases {
        let e = eval_err(src);
        assert!(
            matches!(e, RuleError::Type { .. }),
            "{src:?}: expected a type error, got {e}"
        );
        assert_eq!(e.column(), column, "{src:?}: {e}");
    }
}

#[test]
fn eval_bool_requires_boolean() {
    let rule = Rule::parse("branch").unwrap();
    let e = rule.eval_bool(&vars()).unwrap_err();
    assert!(matches!(e, RuleError::Type { column: 1, .. }), "{e}");
    assert!(e.to_string().contains("string"));
}

#[test]
fn syntax_errors_report_the_column() {
    let cases: &[(&str, usize)] = &[
        // End of input: column just past the last character.
        ("len(text) > ", 13),
        ("len(text) >", 12),
        // Unterminated string: column of the opening quote.
        ("branch == 'deep", 11),
        ("branch == \"deep", 11),
        ("'abc\\", 1),
        ("'bad \\q escape'", 6),
        ("", 1),
        ("   ", 4),
        ("branch = 'deep'", 8),
        ("a & b", 3),
        ("a | b", 3),
        ("1 +* 2", 4),
        ("(1 + 2", 7),
        ("1 + 2)", 6),
        ("a b", 3),
        ("flag ? 1", 9),
        ("flag ? 1 2", 10),
        ("doc.", 5),
        ("doc.1", 5),
        ("size(text)", 1),
        ("len(a, b)", 9),
        ("len()", 5),
        ("contains(text)", 14),
        ("contains(text,)", 15),
        ("1 # 2", 3),
        ("12abc", 3),
        ("1e", 2),
        ("1e+x", 2),
        ("1e999", 1),
        ("'é' == #", 8),
        ("len(text) > 2000 ? 'deep' : 'shallow' extra", 39),
    ];
    for &(src, column) in cases {
        let e = parse_err(src);
        assert!(
            matches!(e, RuleError::Syntax { .. }),
            "{src:?}: expected a syntax error, got {e}"
        );
        assert_eq!(e.column(), column, "{src:?}: {e}");
    }
    let e = parse_err("len(text) > ");
    assert!(e.to_string().contains("end of input"), "{e}");
    assert!(e.to_string().contains("column 13"), "{e}");
    let e = parse_err("branch == 'deep");
    assert!(e.to_string().contains("unterminated"), "{e}");
}

#[test]
fn round_trip_helpers() {
    let rule: Rule = "n > 1".parse().unwrap();
    assert_eq!(rule.source(), "n > 1");
    assert_eq!(rule.to_string(), "n > 1");
    assert!(rule.eval_bool(&vars()).unwrap());
}

// ------------------------------------------------------- hostile input --

fn assert_limit(e: &RuleError, limit: Limit) {
    assert!(
        matches!(e, RuleError::Limit { limit: l, .. } if *l == limit),
        "expected {limit:?}, got {e}"
    );
}

#[test]
fn deep_parentheses_10000_levels() {
    let src = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = fast(|| parse_err(&src));
    assert_limit(&e, Limit::SourceLength);
    assert_eq!(e.column(), MAX_SOURCE_CHARS + 1);
}

#[test]
fn deep_nesting_within_the_length_cap() {
    let src = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
    let e = fast(|| parse_err(&src));
    assert_limit(&e, Limit::Nesting);
    // Points at the first token of the sub-expression that is too deep.
    assert_eq!(e.column(), MAX_NESTING + 1);
    for prefix in ["!", "-", "len(", "lower(", "contains(a, "] {
        let src = prefix.repeat(4000 / prefix.len());
        let e = fast(|| parse_err(&src));
        assert_limit(&e, Limit::Nesting);
    }
    let ternaries = "a ? b : ".repeat(500) + "c";
    assert_limit(&fast(|| parse_err(&ternaries)), Limit::Nesting);
    let middle = "a ? ".repeat(1000) + "b";
    assert_limit(&fast(|| parse_err(&middle)), Limit::Nesting);
}

#[test]
fn nesting_just_under_the_limit_works() {
    // Each parenthesis level and the top level count once.
    let depth = MAX_NESTING - 1;
    let src = format!("{}n{}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(ev(&src), json!(7));
    let src = format!("{}n{}", "(".repeat(depth + 1), ")".repeat(depth + 1));
    assert_limit(&parse_err(&src), Limit::Nesting);
}

#[test]
fn long_operator_chains_hit_the_tree_depth_cap() {
    let ok = vec!["1"; MAX_TREE_DEPTH].join("+");
    assert_eq!(ev(&ok), json!(MAX_TREE_DEPTH));
    let chain = vec!["1"; 2000].join("+");
    assert_limit(&fast(|| parse_err(&chain)), Limit::TreeDepth);
    let chain = vec!["flag"; 600].join("&&");
    assert_limit(&fast(|| parse_err(&chain)), Limit::TreeDepth);
    let fields = format!("doc{}", ".a".repeat(1500));
    assert_limit(&fast(|| parse_err(&fields)), Limit::TreeDepth);
}

#[test]
fn huge_literals() {
    // A 10 MB string literal is rejected by the length cap, quickly.
    let src = format!("'{}'", "a".repeat(10_000_000));
    assert_limit(&fast(|| parse_err(&src)), Limit::SourceLength);
    // Unterminated huge literal, and huge multi-byte source.
    let src = format!("'{}", "é".repeat(10_000_000));
    assert_limit(&fast(|| parse_err(&src)), Limit::SourceLength);
    // Exactly at the cap is accepted.
    let src = format!("'{}'", "a".repeat(MAX_SOURCE_CHARS - 2));
    assert_eq!(ev(&src).as_str().map(str::len), Some(MAX_SOURCE_CHARS - 2));
    // Huge numeric literals.
    let digits = "9".repeat(4000);
    assert!(matches!(
        parse_err(&digits),
        RuleError::Syntax { column: 1, .. }
    ));
    let digits = format!("0.{}", "9".repeat(4000));
    assert_eq!(ev(&digits), json!(1.0));
    assert!(matches!(parse_err("1e400"), RuleError::Syntax { .. }));
    assert_eq!(ev("1e-400"), json!(0.0));
}

#[test]
fn long_source() {
    let src = "n + ".repeat(2000) + "1";
    assert_limit(&fast(|| parse_err(&src)), Limit::SourceLength);
    let spaces = " ".repeat(MAX_SOURCE_CHARS + 1);
    assert_limit(&parse_err(&spaces), Limit::SourceLength);
}

#[test]
fn huge_variables_are_cheap_and_capped() {
    let big = "ab".repeat(5_000_000); // 10 MB
    let vars = json!({"text": big, "short": "x"});
    let rule = Rule::parse("len(text) > 2000 ? 'deep' : 'shallow'").unwrap();
    assert_eq!(fast(|| rule.eval(&vars)).unwrap(), json!("deep"));
    let rule = Rule::parse("contains(text, 'ba') && starts_with(text, 'abab')").unwrap();
    assert!(fast(|| rule.eval_bool(&vars)).unwrap());
    let rule = Rule::parse("len(lower(text)) == len(upper(text))").unwrap();
    assert!(fast(|| rule.eval_bool(&vars)).unwrap());
    // Repeated concatenation of a large value exceeds the evaluation budget.
    let src = vec!["text"; 200].join(" + ");
    let rule = Rule::parse(&src).unwrap();
    let e = fast(|| rule.eval(&vars)).unwrap_err();
    assert_limit(&e, Limit::EvalBytes);
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "\0",
        "'\u{0}'",
        "((",
        "))",
        "?:",
        "a ? : b",
        ": a",
        ",",
        "len(,)",
        "len((",
        "..",
        ".a",
        "a..b",
        "!",
        "-",
        "1..2",
        "'\\",
        "\"",
        "'",
        "\u{feff}x",
        "x\u{200b}",
        "🦀",
        "a.🦀",
        "==",
        "!=",
        "<=>",
        "&&||",
        "1 2 3",
        "len len",
        "len(text)(1)",
        "true.x",
        "null()",
    ];
    for src in samples {
        if let Ok(rule) = Rule::parse(src) {
            let _ = rule.eval(&vars());
            let _ = rule.eval(&Value::Null);
        }
    }
    // Every prefix of a valid rule either parses or errors.
    let src = "doc.meta.lang == 'en' && (len(text) % 3 != 1 || !flag) ? upper(\"x\") : -n / 2";
    for (i, _) in src.char_indices() {
        if let Ok(rule) = Rule::parse(&src[..i]) {
            let _ = rule.eval(&vars());
        }
    }
    assert_eq!(ev(src), json!("X"));
}

#[test]
fn limit_errors_name_the_limit_and_the_value() {
    let src = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    let e = parse_err(&src);
    let limit = e.limit_exceeded().unwrap();
    assert_eq!(limit.limit, crate::limits::LimitKind::RuleNesting);
    assert_eq!(
        (limit.max, limit.value),
        (MAX_NESTING as u64, MAX_NESTING as u64 + 1)
    );
    assert_eq!(
        e.to_string(),
        format!(
            "too complex at column {}: at least 65 levels is over the `rule_nesting` limit of 64 levels",
            e.column()
        )
    );
    let long = "1".repeat(5000);
    let e = parse_err(&long);
    let limit = e.limit_exceeded().unwrap();
    assert_eq!((limit.value, limit.at_least), (5000, false));
    assert!(
        e.to_string()
            .starts_with("too complex at column 4097: 5000 characters"),
        "{e}"
    );
}

#[test]
fn evaluation_work_is_bounded() {
    // Each `len(t)` scans the whole string: 300 of them over 2 MB (in
    // groups, to stay within the tree depth).
    let vars = json!({"t": "x".repeat(2 * 1024 * 1024)});
    let grouped = |term: &str, op: &str, n: usize| {
        let group = format!("({})", [term; 10].join(op));
        vec![group; n / 10].join(op)
    };
    let src = grouped("len(t)", "+", 300);
    assert!(src.chars().count() <= MAX_SOURCE_CHARS);
    let rule = Rule::parse(&src).unwrap();
    let e = fast(|| rule.eval(&vars)).unwrap_err();
    assert_limit(&e, Limit::EvalWork);
    let limit = e.limit_exceeded().unwrap();
    assert_eq!(limit.limit, crate::limits::LimitKind::RuleEvalWork);
    assert!(limit.value > limit.max);
    assert!(
        e.to_string()
            .starts_with("too costly to evaluate at column"),
        "{e}"
    );
    // Comparisons count the bytes they compare.
    let src = grouped("t == t", " && ", 200);
    let e = fast(|| Rule::parse(&src).unwrap().eval(&vars)).unwrap_err();
    assert_limit(&e, Limit::EvalWork);
    // A few scans are fine.
    assert_eq!(
        Rule::parse("len(t) + len(t)").unwrap().eval(&vars).unwrap(),
        json!(4 * 1024 * 1024)
    );
}
