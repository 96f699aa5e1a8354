#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::json;

fn ctx() -> TemplateContext {
    TemplateContext::new()
        .with_input(json!({"topic": "rust", "n": 3, "tags": ["a", "b"]}))
        .with_node_output(
            "ingest",
            json!({"content": "some text", "meta": {"pages": [10, 20], "ok": true}}),
        )
        .with_node_output("summarize", json!("a summary"))
        .with_node_output("count", json!(42))
        .with_var("question", json!("why?"))
        .with_var("doc", json!({"title": "T"}))
}

fn parse_err(src: &str) -> TemplateError {
    Template::parse(src).expect_err(src)
}

#[test]
fn references_are_extracted_in_order_without_duplicates() {
    let t = Template::parse(
        "{{node.ingest.output.content}} {{ node.summarize.output }} {{input.topic}} {{input}} \
         {{question}} {{doc.title}} {{node.ingest.output.content}}",
    )
    .unwrap();
    assert_eq!(
        t.references(),
        vec![
            Reference::Node {
                id: "ingest".into(),
                path: vec!["content".into()]
            },
            Reference::Node {
                id: "summarize".into(),
                path: vec![]
            },
            Reference::Input {
                path: vec!["topic".into()]
            },
            Reference::Input { path: vec![] },
            Reference::Var("question".into()),
            Reference::Var("doc".into()),
        ]
    );
}

#[test]
fn literal_template_has_no_references() {
    let t = Template::parse("plain {text} with } braces }} and {").unwrap();
    assert!(t.is_literal());
    assert!(t.references().is_empty());
    assert_eq!(
        t.render(&ctx()).unwrap(),
        "plain {text} with } braces }} and {"
    );
    assert_eq!(Template::parse("").unwrap().render(&ctx()).unwrap(), "");
}

#[test]
fn node_ids_with_hyphens_and_digits() {
    let t = Template::parse("{{node.step-2.output.x_1}}").unwrap();
    assert_eq!(
        t.references(),
        vec![Reference::Node {
            id: "step-2".into(),
            path: vec!["x_1".into()]
        }]
    );
}

#[test]
fn renders_strings_numbers_objects() {
    let c = ctx();
    let render = |s: &str| Template::parse(s).unwrap().render(&c).unwrap();
    assert_eq!(render("Topic: {{input.topic}}!"), "Topic: rust!");
    assert_eq!(render("{{node.summarize.output}}"), "a summary");
    assert_eq!(render("n={{input.n}} c={{node.count.output}}"), "n=3 c=42");
    assert_eq!(render("{{input.tags}}"), r#"["a","b"]"#);
    assert_eq!(
        render("meta: {{node.ingest.output.meta}}"),
        r#"meta: {"ok":true,"pages":[10,20]}"#
    );
    assert_eq!(render("{{ question }} / {{doc.title}}"), "why? / T");
    assert_eq!(
        render("multi\nline {{\n  input.topic\n}}"),
        "multi\nline rust"
    );
    assert_eq!(render("ünïcode {{input.topic}} ✓"), "ünïcode rust ✓");
}

#[test]
fn nested_field_paths_and_array_indexes() {
    let c = ctx();
    let render = |s: &str| Template::parse(s).unwrap().render(&c).unwrap();
    assert_eq!(render("{{node.ingest.output.meta.pages.1}}"), "20");
    assert_eq!(render("{{node.ingest.output.meta.ok}}"), "true");
    assert_eq!(render("{{input.tags.0}}"), "a");
}

#[test]
fn render_value_keeps_json_type_for_single_expression() {
    let c = ctx();
    let value = |s: &str| Template::parse(s).unwrap().render_value(&c).unwrap();
    assert_eq!(value("{{input.n}}"), json!(3));
    assert_eq!(
        value("{{node.ingest.output.meta}}"),
        json!({"pages": [10, 20], "ok": true})
    );
    assert_eq!(value("{{ input.tags }}"), json!(["a", "b"]));
    assert_eq!(value("n={{input.n}}"), json!("n=3"));
    assert_eq!(value(" {{input.n}}"), json!(" 3"));
    assert_eq!(value("literal"), json!("literal"));
    assert!(
        Template::parse("{{input.n}}")
            .unwrap()
            .is_single_expression()
    );
    assert!(
        !Template::parse("x{{input.n}}")
            .unwrap()
            .is_single_expression()
    );
}

#[test]
fn missing_node_is_an_error_naming_the_path() {
    let t = Template::parse("hello {{node.missing.output.x}}").unwrap();
    let e = t.render(&ctx()).unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::MissingValue);
    assert!(e.message().contains("node.missing.output.x"), "{e}");
    assert!(e.message().contains("`missing`"), "{e}");
    assert_eq!(e.position().map(|p| p.column), Some(7));
}

#[test]
fn missing_paths_are_errors_naming_the_path() {
    let c = ctx();
    let err = |s: &str| Template::parse(s).unwrap().render(&c).unwrap_err();

    let e = err("{{node.ingest.output.meta.nope}}");
    assert_eq!(e.kind(), TemplateErrorKind::MissingValue);
    assert!(
        e.message().contains("`node.ingest.output.meta.nope`"),
        "{e}"
    );
    assert!(
        e.message()
            .contains("`node.ingest.output.meta` has no field `nope`"),
        "{e}"
    );

    let e = err("{{input.tags.5}}");
    assert!(e.message().contains("array of 2 items"), "{e}");

    let e = err("{{node.summarize.output.title}}");
    assert!(e.message().contains("is a string"), "{e}");

    let e = err("{{input.missing}}");
    assert!(
        e.message().contains("`input` has no field `missing`"),
        "{e}"
    );

    let e = err("{{nobody}}");
    assert!(
        e.message().contains("variable `nobody` is not defined"),
        "{e}"
    );

    // render_value reports the same errors.
    let e = Template::parse("{{input.missing}}")
        .unwrap()
        .render_value(&c)
        .unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::MissingValue);
}

#[test]
fn rejects_code_like_syntax() {
    let cases = [
        ("{% for x in items %}{{x}}{% endfor %}", "blocks"),
        ("{% if input.x %}y{% endif %}", "blocks"),
        ("{# comment #}", "comments"),
        ("{{ x | upper }}", "filters"),
        ("{{ input.topic|upper }}", "filters"),
        ("{{ 1 + 2 }}", "operators"),
        ("{{ input.n * 2 }}", "operators"),
        ("{{ input.n - 1 }}", "operators"),
        ("{{ f() }}", "function calls"),
        ("{{ input.topic.upper() }}", "function calls"),
        ("{{ input['topic'] }}", "subscripts"),
        ("{{ 'text' }}", "string literals"),
        ("{{ 42 }}", "number literals"),
        ("{{ x if y else z }}", "expressions"),
        ("{{ not x }}", "expressions"),
        ("{{- input.topic }}", "whitespace control"),
        ("{{ input.topic -}}", "whitespace control"),
        ("{{ a b }}", "single dotted path"),
        ("{{ {a} }}", "unexpected character"),
    ];
    for (src, needle) in cases {
        let e = parse_err(src);
        assert_eq!(e.kind(), TemplateErrorKind::Unsupported, "{src}: {e}");
        assert!(e.message().contains(needle), "{src}: {e}");
        assert!(e.position().is_some(), "{src}");
    }
}

#[test]
fn error_positions_are_one_based() {
    let e = parse_err("ab {{ x | upper }}");
    let p = e.position().unwrap();
    assert_eq!((p.line, p.column, p.offset), (1, 9, 8));
    assert!(e.to_string().contains("line 1, column 9"), "{e}");

    let e = parse_err("first\nsé {% if %}");
    let p = e.position().unwrap();
    assert_eq!((p.line, p.column), (2, 4));
}

#[test]
fn syntax_errors() {
    let e = parse_err("hello {{ input.topic");
    assert_eq!(e.kind(), TemplateErrorKind::Syntax);
    assert!(e.message().contains("unterminated"), "{e}");
    assert_eq!(e.position().map(|p| p.column), Some(7));

    let e = parse_err("{{input.topic}} then {{");
    assert!(e.message().contains("unterminated"), "{e}");

    for src in ["{{}}", "{{   }}"] {
        let e = parse_err(src);
        assert_eq!(e.kind(), TemplateErrorKind::Syntax, "{src}");
        assert!(e.message().contains("empty placeholder"), "{src}: {e}");
    }
    for src in ["{{ input..x }}", "{{ .input }}", "{{ input. }}"] {
        let e = parse_err(src);
        assert_eq!(e.kind(), TemplateErrorKind::Syntax, "{src}");
        assert!(e.message().contains("empty path segment"), "{src}: {e}");
    }
    for src in ["{{ node }}", "{{ node.a }}", "{{ node.a.input }}"] {
        let e = parse_err(src);
        assert_eq!(e.kind(), TemplateErrorKind::Syntax, "{src}");
        assert!(e.message().contains("node.<id>.output"), "{src}: {e}");
    }
}

#[test]
fn template_length_is_capped() {
    let ok = "x".repeat(MAX_TEMPLATE_LEN);
    assert!(Template::parse(&ok).is_ok());
    let e = parse_err(&"x".repeat(MAX_TEMPLATE_LEN + 1));
    assert_eq!(e.kind(), TemplateErrorKind::TemplateTooLong);
    assert!(e.position().is_none());
}

#[test]
fn output_size_is_capped() {
    let big = "y".repeat(600 * 1024);
    let c = TemplateContext::new().with_input(json!({ "s": big, "arr": vec![big.clone(); 4] }));

    let one = Template::parse("{{input.s}}").unwrap().render(&c).unwrap();
    assert_eq!(one.len(), 600 * 1024);

    let e = Template::parse("{{input.s}}{{input.s}}")
        .unwrap()
        .render(&c)
        .unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);

    // Serialising a large JSON value stops at the limit too.
    let e = Template::parse("{{input.arr}}")
        .unwrap()
        .render(&c)
        .unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);

    // Many small placeholders multiplying a value: still bounded.
    let src = "{{input.s}}".repeat(5000);
    let e = Template::parse(&src).unwrap().render(&c).unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);

    // A configurable, smaller limit.
    let small = ctx().with_max_output_len(8);
    assert_eq!(
        Template::parse("{{input.topic}}")
            .unwrap()
            .render(&small)
            .unwrap(),
        "rust"
    );
    let e = Template::parse("{{input.topic}} {{input.topic}}")
        .unwrap()
        .render(&small)
        .unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);
}

#[test]
fn hostile_inputs_do_not_panic() {
    let inputs = [
        "{",
        "{{",
        "}}",
        "{{{",
        "{{{{}}}}",
        "{%",
        "{#",
        "{{ é }}",
        "{{\u{0}}}",
        "{{ 🦀 }}",
        "{{ input.\u{200b} }}",
        "{{node.}}",
        "{{node..output}}",
        "é{{",
        "{{ input }}}",
    ];
    for src in inputs {
        if let Ok(t) = Template::parse(src) {
            let _ = t.references();
            let _ = t.render(&ctx());
            let _ = t.render_value(&ctx());
        }
    }
    // `{{ input }}}`: the placeholder ends at the first `}}`, the rest is text.
    let t = Template::parse("{{ input.topic }}}").unwrap();
    assert_eq!(t.render(&ctx()).unwrap(), "rust}");
}

#[test]
fn from_str_and_source() {
    let t: Template = "a {{input.topic}}".parse().unwrap();
    assert_eq!(t.source(), "a {{input.topic}}");
}

#[test]
fn a_single_placeholder_value_is_capped_like_text() {
    let big = "y".repeat(600 * 1024);
    let c = TemplateContext::new().with_input(json!({ "s": big, "arr": vec![big.clone(); 4] }));
    // A string within the limit is returned as it is.
    let v = Template::parse("{{input.s}}")
        .unwrap()
        .render_value(&c)
        .unwrap();
    assert_eq!(v.as_str().map(str::len), Some(600 * 1024));
    // A 2.4 MB array is not copied: it is over the limit.
    let e = Template::parse("{{input.arr}}")
        .unwrap()
        .render_value(&c)
        .unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);
    let limit = e.limit().unwrap();
    assert_eq!(limit.limit, crate::limits::LimitKind::TemplateOutputBytes);
    assert_eq!(limit.max, DEFAULT_MAX_OUTPUT_LEN as u64);
    assert!(limit.at_least && limit.value > limit.max);
    assert!(
        e.to_string().contains("`template_output_bytes` limit"),
        "{e}"
    );
    // A smaller configured limit applies to values too.
    let small = c.clone().with_max_output_len(10);
    let e = Template::parse("{{input.s}}")
        .unwrap()
        .render_value(&small)
        .unwrap_err();
    assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);
    assert_eq!(e.limit().unwrap().value, 600 * 1024);
    let n = TemplateContext::new()
        .with_input(json!({"n": 12345}))
        .with_max_output_len(5);
    assert_eq!(
        Template::parse("{{input.n}}")
            .unwrap()
            .render_value(&n)
            .unwrap(),
        json!(12345)
    );
    let n = n.with_max_output_len(4);
    assert!(
        Template::parse("{{input.n}}")
            .unwrap()
            .render_value(&n)
            .is_err()
    );
}
