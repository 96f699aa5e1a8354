//! Per-node checks: configs, providers, tools and their arguments,
//! routers, and the templates a node reads.

use super::*;

impl<'a, 'o> Checker<'a, 'o> {
    pub(super) fn check_node(&mut self, i: usize) {
        let Some(node) = self.nodes.get(i) else {
            return;
        };
        let (node_type, config, inputs, retry) =
            (node.node_type, node.config, node.inputs, node.retry);
        let base = format!("/nodes/{i}");
        if let Some(inputs) = inputs {
            for (name, value) in inputs {
                let pointer = format!("{base}/inputs/{}", escape(name));
                if RESERVED_INPUTS.contains(&name.as_str()) {
                    self.push(
                        &pointer,
                        ProblemKind::Invalid,
                        format!("input name `{name}` is reserved and could not be read by name"),
                    );
                }
                if let Some(source) = value.as_str() {
                    self.check_template(i, &pointer, source, TemplateRole::Input);
                }
            }
        }
        if let Some(config) = config {
            match node_type {
                Some("llm") => self.check_llm(i, &base, config),
                Some("tool") => self.check_tool(i, &base, config),
                Some("router") => self.check_router(&base, config, inputs),
                Some("approval") => {
                    if let Some(message) = config.get("message").and_then(Value::as_str) {
                        let pointer = format!("{base}/config/message");
                        self.check_template(i, &pointer, message, TemplateRole::Config);
                    }
                }
                _ => {}
            }
        }
        if let Some(retry) = retry {
            let initial = retry.get("initialDelayMs").and_then(Value::as_u64);
            let max = retry.get("maxDelayMs").and_then(Value::as_u64);
            if let (Some(initial), Some(max)) = (initial, max)
                && initial > max
            {
                self.push(
                    format!("{base}/retry/initialDelayMs"),
                    ProblemKind::Invalid,
                    format!("initialDelayMs ({initial}) is greater than maxDelayMs ({max})"),
                );
            }
        }
    }

    fn check_llm(&mut self, i: usize, base: &str, config: &'a Map<String, Value>) {
        let config_base = format!("{base}/config");
        self.check_provider(&config_base, config);
        for key in ["system", "prompt"] {
            if let Some(source) = config.get(key).and_then(Value::as_str) {
                let pointer = format!("{config_base}/{key}");
                self.check_template(i, &pointer, source, TemplateRole::Config);
            }
        }
        self.check_simulated_response(i, &config_base, config);
        let Some(fallbacks) = config.get("fallbacks").and_then(Value::as_array) else {
            return;
        };
        for (j, fallback) in fallbacks.iter().enumerate() {
            let Some(fallback) = fallback.as_object() else {
                continue;
            };
            let fb_base = format!("{config_base}/fallbacks/{j}");
            self.check_provider(&fb_base, fallback);
            self.check_simulated_response(i, &fb_base, fallback);
        }
    }

    /// Checks the `simulated.response` template of the model config at `base`.
    fn check_simulated_response(&mut self, i: usize, base: &str, config: &'a Map<String, Value>) {
        let source = config
            .get("simulated")
            .and_then(|s| s.get("response"))
            .and_then(Value::as_str);
        if let Some(source) = source {
            let pointer = format!("{base}/simulated/response");
            self.check_template(i, &pointer, source, TemplateRole::Config);
        }
    }

    /// Checks `provider`, and that only the simulated provider has
    /// `simulated` options, in an LLM config or a fallback at `base`.
    fn check_provider(&mut self, base: &str, config: &Map<String, Value>) {
        let Some(provider) = config.get("provider").and_then(Value::as_str) else {
            return;
        };
        if !self.known.has_provider(provider) {
            let registered = self.known.providers().collect::<Vec<_>>().join(", ");
            self.push(
                format!("{base}/provider"),
                ProblemKind::UnknownProvider,
                format!(
                    "unknown provider `{}` (registered: {registered})",
                    quote(provider)
                ),
            );
            return;
        }
        if provider != SIMULATED_PROVIDER && config.contains_key("simulated") {
            self.push(
                format!("{base}/simulated"),
                ProblemKind::Invalid,
                format!(
                    "`simulated` holds options of the `{SIMULATED_PROVIDER}` provider, but the provider is `{}`",
                    quote(provider)
                ),
            );
        }
    }

    fn check_tool(&mut self, i: usize, base: &str, config: &'a Map<String, Value>) {
        if let Some(tool) = config.get("tool").and_then(Value::as_str)
            && !self.known.has_tool(tool)
        {
            let registered = self.known.tools().collect::<Vec<_>>().join(", ");
            self.push(
                format!("{base}/config/tool"),
                ProblemKind::UnknownTool,
                format!("unknown tool `{}` (registered: {registered})", quote(tool)),
            );
        }
        for (key, value) in config {
            if key == "tool" {
                continue;
            }
            let pointer = format!("{base}/config/{}", escape(key));
            self.check_templates_in(i, &pointer, value);
        }
        if let Some(schema) = config
            .get("tool")
            .and_then(Value::as_str)
            .and_then(|tool| self.known.tool_schema(tool).map(|s| (tool, s)))
        {
            self.check_tool_arguments(base, schema.0, schema.1, config);
        }
    }

    /// Checks every string inside `value` as a template.
    fn check_templates_in(&mut self, i: usize, pointer: &str, value: &'a Value) {
        match value {
            Value::String(source) => self.check_template(i, pointer, source, TemplateRole::Config),
            Value::Array(items) => {
                for (n, item) in items.iter().enumerate() {
                    self.check_templates_in(i, &format!("{pointer}/{n}"), item);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    self.check_templates_in(i, &format!("{pointer}/{}", escape(k)), v);
                }
            }
            _ => {}
        }
    }

    /// Checks a tool node's arguments against the tool's schema: required
    /// ones present, no unknown ones when the schema closes the object, and
    /// every literal (template-free) value valid for its property.
    fn check_tool_arguments(
        &mut self,
        base: &str,
        tool: &str,
        schema: &Value,
        config: &Map<String, Value>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !config.contains_key(name) {
                    self.push(
                        format!("{base}/config"),
                        ProblemKind::ToolArguments,
                        format!(
                            "missing argument `{}` required by tool `{}`",
                            quote(name),
                            quote(tool)
                        ),
                    );
                }
            }
        }
        // Closed objects: unknown names are reported (pattern properties
        // would accept names not listed, so those schemas are not closed).
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false))
            && schema.get("patternProperties").is_none();
        let mut literals = Map::new();
        for (key, value) in config {
            if key == "tool" {
                continue;
            }
            let known = properties.is_some_and(|p| p.contains_key(key));
            if !known && closed {
                let accepted = properties
                    .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                self.push(
                    format!("{base}/config/{}", escape(key)),
                    ProblemKind::ToolArguments,
                    format!(
                        "unknown argument `{}` for tool `{}` (accepted: {accepted})",
                        quote(key),
                        quote(tool)
                    ),
                );
                continue;
            }
            if !has_template(value) {
                literals.insert(key.clone(), value.clone());
            }
        }
        if literals.is_empty() {
            return;
        }
        // The literal arguments against the whole schema (so `$ref`s
        // resolve); errors about the object itself (required, unknown
        // names) are the checks above, made with templated ones in view.
        match jsonschema::validator_for(schema) {
            Ok(validator) => {
                let literals = Value::Object(literals);
                for error in validator.iter_errors(&literals) {
                    let at = error.instance_path().to_string();
                    if at.is_empty() {
                        continue;
                    }
                    self.push(
                        format!("{base}/config{at}"),
                        ProblemKind::ToolArguments,
                        clip(
                            &format!("tool `{}`: {}", quote(tool), error.masked_with("value")),
                            MAX_MESSAGE_CHARS,
                        ),
                    );
                }
            }
            Err(e) => self.push(
                format!("{base}/config/tool"),
                ProblemKind::Internal,
                clip(
                    &format!("tool `{}` has an invalid argument schema: {e}", quote(tool)),
                    MAX_MESSAGE_CHARS,
                ),
            ),
        }
    }

    fn check_router(
        &mut self,
        base: &str,
        config: &Map<String, Value>,
        inputs: Option<&Map<String, Value>>,
    ) {
        let Some(source) = config.get("rule").and_then(Value::as_str) else {
            return;
        };
        let pointer = format!("{base}/config/rule");
        match Rule::parse(source) {
            Err(e) => self.out.push(
                Problem::new(&pointer, ProblemKind::Rule, format!("rule {e}"))
                    .at(None, Some(e.column()))
                    .with_limit(e.limit_exceeded()),
            ),
            Ok(rule) => {
                for var in rule.variables() {
                    if !inputs.is_some_and(|m| m.contains_key(&var)) {
                        self.push(
                            &pointer,
                            ProblemKind::UnknownVariable,
                            format!(
                                "rule reads `{}`, which is not one of the node's inputs ({})",
                                quote(&var),
                                names(inputs)
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Parses a template of node `node` and checks what it reads.
    fn check_template(&mut self, node: usize, pointer: &str, source: &str, role: TemplateRole) {
        let template = match Template::parse(source) {
            Ok(t) => t,
            Err(e) => {
                let pos = e.position();
                self.out.push(
                    Problem::new(pointer, ProblemKind::Template, e.to_string())
                        .at(pos.map(|p| p.line), pos.map(|p| p.column)),
                );
                return;
            }
        };
        let inputs = self.nodes.get(node).and_then(|n| n.inputs);
        let mut seen = HashSet::new();
        for reference in template.references() {
            if !seen.insert(reference.clone()) {
                continue;
            }
            match reference {
                Reference::Input { .. } => {}
                Reference::Var(name) => match role {
                    TemplateRole::Input => self.push(
                        pointer,
                        ProblemKind::UnknownVariable,
                        format!(
                            "inputs may read only `{{{{node.<id>.output…}}}}` and `{{{{input…}}}}`, not `{{{{{}}}}}`",
                            quote(&name)
                        ),
                    ),
                    TemplateRole::Config => {
                        if !inputs.is_some_and(|m| m.contains_key(&name)) {
                            self.push(
                                pointer,
                                ProblemKind::UnknownVariable,
                                format!(
                                    "template reads `{{{{{}}}}}`, which is not one of the node's inputs ({})",
                                    quote(&name),
                                    names(inputs)
                                ),
                            );
                        }
                    }
                },
                Reference::Node { id, .. } => self.check_node_reference(node, pointer, &id),
            }
        }
    }

    fn check_node_reference(&mut self, node: usize, pointer: &str, id: &str) {
        let Some(&target) = self.ids.get(id) else {
            self.push(
                pointer,
                ProblemKind::UnknownNode,
                format!("template reads unknown node `{}`", quote(id)),
            );
            return;
        };
        let this = self
            .nodes
            .get(node)
            .and_then(|n| n.id)
            .unwrap_or_default()
            .to_owned();
        if target == node {
            self.push(
                pointer,
                ProblemKind::NotBefore,
                format!("template of node `{}` reads its own output", quote(&this)),
            );
            return;
        }
        if self.nodes.len() > MAX_GRAPH_NODES || self.edges.len() > MAX_GRAPH_EDGES {
            return;
        }
        if !self.ancestors_of(node).contains(&target) {
            self.push(
                pointer,
                ProblemKind::NotBefore,
                format!(
                    "template reads node `{}`, which does not run before node `{}` (it is not an ancestor in the edge graph)",
                    quote(id),
                    quote(&this)
                ),
            );
        }
    }
}
