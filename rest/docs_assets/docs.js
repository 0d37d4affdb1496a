// The API reference: fetches the OpenAPI 3.1 document and renders it, grouped by tag.
// Vanilla JS, no dependencies. The DOM is built with createElement and text nodes only
// (never HTML strings), which the page's Content-Security-Policy and Trusted Types require.
"use strict";

(() => {
  const METHODS = ["get", "put", "post", "patch", "delete", "head", "options"];
  let spec = null;

  // h("div", {class: "x"}, child, "text", [more]) — attributes set as attributes, children as
  // nodes or text; null/false children are skipped.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  // Descriptions use `code` spans and nothing else worth rendering.
  const prose = (text) =>
    String(text || "").split("`").map((part, i) => (i % 2 ? h("code", null, part) : part));

  const refName = (schema) => (schema && schema.$ref ? schema.$ref.split("/").pop() : null);

  function resolve(schema) {
    if (!schema || typeof schema.$ref !== "string" || !schema.$ref.startsWith("#/")) {
      return schema || {};
    }
    const keys = schema.$ref.slice(2).split("/")
      .map((k) => decodeURIComponent(k).replace(/~1/g, "/").replace(/~0/g, "~"));
    return keys.reduce((node, key) => (node ? node[key] : undefined), spec) || {};
  }

  function typeLabel(schema) {
    const name = refName(schema);
    if (name) return name;
    const s = schema || {};
    if (s.const !== undefined) return JSON.stringify(s.const);
    if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map(typeLabel).join(" | ");
    if (s.allOf) return s.allOf.map(typeLabel).join(" & ");
    let type = Array.isArray(s.type) ? s.type.join(" | ") : s.type || "any";
    if (type === "array") {
      const item = typeLabel(s.items);
      type = (item.includes(" | ") ? "(" + item + ")" : item) + "[]";
    } else if (type === "object" && s.additionalProperties && !s.properties) {
      type = "map<string, " + typeLabel(s.additionalProperties) + ">";
    }
    return s.format ? type + " (" + s.format + ")" : type;
  }

  const LIMITS = [
    ["minimum", "≥ "], ["exclusiveMinimum", "> "], ["maximum", "≤ "], ["exclusiveMaximum", "< "],
    ["minLength", "length ≥ "], ["maxLength", "length ≤ "], ["minItems", "items ≥ "],
    ["maxItems", "items ≤ "], ["minProperties", "keys ≥ "], ["maxProperties", "keys ≤ "],
    ["multipleOf", "multiple of "], ["pattern", "pattern "],
  ];

  function limits(schema) {
    const s = resolve(schema);
    const out = LIMITS.filter(([key]) => s[key] !== undefined).map(([key, label]) => label + s[key]);
    if (s.uniqueItems) out.push("unique");
    if (s.default !== undefined) out.push("default " + JSON.stringify(s.default));
    return out.length ? h("span", { class: "limits" }, out.join(", ")) : null;
  }

  // Worth a nested view: objects with fields, and lists or unions that contain them.
  function isComplex(schema, depth = 0) {
    const s = resolve(schema);
    if (depth > 8) return false;
    if (s.properties) return true;
    if (s.items) return isComplex(s.items, depth + 1);
    return (s.anyOf || s.oneOf || s.allOf || []).some((alt) => isComplex(alt, depth + 1));
  }

  function schemaView(schema, seen = new Set()) {
    const name = refName(schema);
    if (name && seen.has(name)) return h("p", { class: "muted" }, name + " (recursive, see above)");
    const inner = name ? new Set([...seen, name]) : seen;
    const s = resolve(schema);
    const alts = (s.anyOf || s.oneOf || []).filter((alt) => resolve(alt).type !== "null");
    if (alts.length === 1 && !s.properties) return schemaView(alts[0], inner); // X | null
    const box = h("div", { class: "schema" });
    if (s.description) box.append(h("p", { class: "desc" }, prose(s.description)));
    if (s.properties) {
      const required = new Set(s.required || []);
      box.append(h("ul", { class: "props" }, Object.entries(s.properties).map(([key, prop]) =>
        h("li", null,
          h("code", { class: "name" }, key),
          required.has(key) ? h("span", { class: "req", title: "required" }, "*") : null,
          " ", h("span", { class: "type" }, typeLabel(prop)), " ", limits(prop),
          resolve(prop).description && !refName(prop)
            ? h("div", { class: "desc" }, prose(resolve(prop).description)) : null,
          isComplex(prop) ? schemaView(prop, inner) : null))));
      if (s.additionalProperties === false) box.append(h("p", { class: "muted" }, "No other fields."));
    } else if (s.items && isComplex(s.items)) {
      box.append(h("p", { class: "muted" }, "Each item: ", typeLabel(s.items)), schemaView(s.items, inner));
    } else if (alts.length) {
      box.append(h("p", { class: "muted" }, "One of:"),
        h("ol", { class: "alts" }, alts.map((alt) => h("li", null,
          h("span", { class: "type" }, typeLabel(alt)), " ", limits(alt),
          isComplex(alt) ? schemaView(alt, inner) : null))));
    } else {
      box.append(h("p", null, h("span", { class: "type" }, typeLabel(s)), " ", limits(s)));
    }
    return box;
  }

  function authText(op) {
    if (!op.security || !op.security.length) return null;
    const parts = op.security.map((req) => {
      const [scheme, roles] = Object.entries(req)[0] || [];
      if (!scheme) return "anonymous";
      if (scheme === "botKey") return "bot key with scope " + roles.join(", ");
      return roles.length ? "bearer token (" + roles.join(" or ") + ")" : "bearer token";
    });
    return parts.join(" · or ");
  }

  function authBadge(op) {
    if (!op.security || !op.security.length) return null;
    const optional = op.security.some((req) => !Object.keys(req).length);
    const bearer = op.security.find((req) => req.bearerAuth);
    const roles = bearer && bearer.bearerAuth.length ? bearer.bearerAuth.join("/") : "user";
    const bot = op.security.find((req) => req.botKey);
    return h("span", { class: "badges" },
      h("span", { class: "badge" + (optional ? "" : " auth") }, optional ? "optional auth" : roles),
      bot ? h("span", { class: "badge bot" }, "bot: " + bot.botKey.join(", ")) : null);
  }

  function parametersView(parameters) {
    return h("table", { class: "params" },
      h("thead", null, h("tr", null, ["Name", "In", "Type", "Notes"].map((t) => h("th", null, t)))),
      h("tbody", null, parameters.map((p) => h("tr", null,
        h("td", null, h("code", null, p.name), p.required ? h("span", { class: "req" }, "*") : null),
        h("td", null, p.in),
        h("td", null, h("span", { class: "type" }, typeLabel(p.schema))),
        h("td", null, limits(p.schema), p.description ? h("div", null, prose(p.description)) : null)))));
  }

  function contentView(content, open) {
    return Object.entries(content || {}).map(([mediaType, media]) => {
      const label = [h("code", null, mediaType)];
      if (!media.schema) return h("p", null, label);
      label.push(" ", h("span", { class: "type" }, typeLabel(media.schema)));
      if (!isComplex(media.schema)) return h("p", null, label, " ", limits(media.schema));
      return h("details", { class: "content", open }, h("summary", null, label),
        schemaView(media.schema));
    });
  }

  function responsesView(responses) {
    return h("ul", { class: "responses" }, Object.entries(responses).map(([status, r]) => {
      const response = resolve(r);
      return h("li", null,
        h("span", { class: "status s" + status[0] }, status), " ",
        h("span", null, prose(response.description)),
        (response["x-codes"] || []).length
          ? h("div", { class: "codes" }, response["x-codes"].map((c) => h("code", null, c))) : null,
        response.headers ? h("div", { class: "muted" }, "Headers: ",
          Object.keys(response.headers).map((name, i) => [i ? ", " : "", h("code", null, name)])) : null,
        contentView(response.content, status.startsWith("2")));
    }));
  }

  function operationBody(op) {
    const section = (title, ...body) => h("section", null, h("h4", null, title), body);
    const auth = authText(op);
    return h("div", { class: "op-body" },
      op.description ? h("p", { class: "desc" }, prose(op.description)) : null,
      h("p", { class: "muted" }, "Auth: ", auth || "none", " · operation ", h("code", null, op.operationId)),
      op.parameters && op.parameters.length ? section("Parameters", parametersView(op.parameters)) : null,
      op.requestBody ? section("Request body",
        op.requestBody.description ? h("p", { class: "muted" }, prose(op.requestBody.description)) : null,
        contentView(op.requestBody.content, true)) : null,
      section("Responses", responsesView(op.responses || {})));
  }

  function operationView(path, method, op) {
    const id = op.operationId || method + path;
    const details = h("details", { class: "op", id },
      h("summary", null,
        h("span", { class: "method m-" + method }, method.toUpperCase()),
        h("code", { class: "path" }, path),
        h("span", { class: "summary" }, op.summary || ""),
        authBadge(op)));
    details.addEventListener("toggle", () => {
      if (!details.open) return;
      if (!details.dataset.rendered) {
        details.append(operationBody(op));
        details.dataset.rendered = "1";
      }
      history.replaceState(null, "", "#" + encodeURIComponent(id));
    });
    const codes = Object.values(op.responses || {}).flatMap((r) => r["x-codes"] || []);
    details.dataset.search = [method, path, op.summary, op.operationId, (op.tags || []).join(" "),
      codes.join(" ")].join(" ").toLowerCase();
    return details;
  }

  function render() {
    const groups = new Map((spec.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const tag = (item[method].tags || ["other"])[0];
        if (!groups.has(tag)) groups.set(tag, { tag: { name: tag }, ops: [] });
        groups.get(tag).ops.push(operationView(path, method, item[method]));
      }
    }
    const app = document.getElementById("app");
    const toc = document.getElementById("toc");
    document.getElementById("version").textContent = "v" + spec.info.version;
    document.title = spec.info.title + " " + spec.info.version;
    const sections = [...groups.values()].filter((g) => g.ops.length).map(({ tag, ops }) =>
      h("section", { class: "tag", id: "tag-" + tag.name },
        h("h2", null, tag.name, " ", h("span", { class: "muted" }, tag.description ? prose(tag.description) : "")),
        ops));
    toc.replaceChildren(...sections.map((s) =>
      h("a", { href: "#" + s.id }, s.id.slice(4), " ", h("span", { class: "muted" }, s.querySelectorAll(".op").length))));
    app.replaceChildren(
      h("p", { class: "desc intro" }, prose(spec.info.description)),
      h("p", { class: "empty muted", hidden: true }, "No operation matches the filter."),
      ...sections);
    openFromHash();
  }

  function applyFilter(text) {
    const words = text.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const section of document.querySelectorAll("section.tag")) {
      let visible = 0;
      for (const op of section.querySelectorAll(".op")) {
        const match = words.every((w) => op.dataset.search.includes(w));
        op.hidden = !match;
        visible += match ? 1 : 0;
      }
      section.hidden = visible === 0;
      shown += visible;
    }
    const empty = document.querySelector(".empty");
    if (empty) empty.hidden = shown > 0;
  }

  function openFromHash() {
    const id = decodeURIComponent(location.hash.slice(1));
    const target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView({ block: "start" });
    }
  }

  function start() {
    const filter = document.getElementById("filter");
    filter.addEventListener("input", () => applyFilter(filter.value));
    document.addEventListener("keydown", (event) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
      if (event.key === "/" && !typing) {
        event.preventDefault();
        filter.focus();
      } else if (event.key === "Escape" && document.activeElement === filter) {
        filter.value = "";
        applyFilter("");
      }
    });
    window.addEventListener("hashchange", openFromHash);
    fetch(document.body.dataset.spec, { headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then((document_) => {
        spec = document_;
        render();
        applyFilter(filter.value);
      })
      .catch((error) => {
        document.getElementById("app").replaceChildren(
          h("p", { class: "error" }, "Could not load the OpenAPI document: " + error.message));
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
