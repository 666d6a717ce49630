"""An AsyncAPI 3.0 document as one readable HTML page: how to connect, each channel, the frames both ways.

Rendered on the server from the document alone, with no script and nothing loaded from elsewhere. Markup is
only ever made by `element`, which escapes every string it is given; descriptions keep just paragraphs,
`- ` lists and `code` spans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

STYLE = """
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --code: #f3f4f6; --accent: #1d4ed8; }
@media (prefers-color-scheme: dark) {
  :root { --muted: #9ca3af; --line: #374151; --code: #1f2937; --accent: #93c5fd; }
}
body { font: 16px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem 1.25rem 4rem; }
a { color: var(--accent); }
h1 { margin-bottom: 0; }
h2 { border-top: 1px solid var(--line); margin-top: 2.5rem; padding-top: 1.5rem; }
h4 { margin: 0 0 0.25rem; }
code, pre { background: var(--code); border-radius: 4px; font: 0.9em/1.45 ui-monospace, monospace; }
code { padding: 0.1em 0.3em; }
pre { overflow-x: auto; padding: 0.75rem; }
table { border-collapse: collapse; margin: 0.5rem 0; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 0.35rem 0.5rem; text-align: left; }
td { vertical-align: top; }
th:nth-child(1) { width: 20%; } th:nth-child(2) { width: 30%; } th:nth-child(3) { width: 6rem; }
caption { font-weight: 600; padding: 0.5rem 0; text-align: left; }
.muted { color: var(--muted); }
.frame { border-left: 3px solid var(--line); margin: 1.5rem 0; padding-left: 1rem; }
"""


class Html(str):
    """Text that is HTML already; `element` escapes every other string."""


Content = str | Iterable["Content"] | None


def element(tag: str, *children: Content, **attributes: str) -> Html:
    """`<tag ...>children</tag>`; `class_="x"` is written `class="x"`, `aria_label` `aria-label`."""
    attrs = "".join(
        f' {name.rstrip("_").replace("_", "-")}="{escape(value)}"' for name, value in attributes.items()
    )
    return Html(f"<{tag}{attrs}>{_markup(children)}</{tag}>")


def _markup(content: Content) -> str:
    if isinstance(content, Html):
        return content
    if isinstance(content, str):
        return escape(content, quote=False)
    return "" if content is None else "".join(_markup(child) for child in content)


def inline(text: str) -> Html:
    """Text in which `backquoted` spans are code."""
    pieces = text.split("`")
    return Html(
        "".join(element("code", piece) if index % 2 else _markup(piece) for index, piece in enumerate(pieces))
    )


def prose(text: str) -> Html:
    """The paragraphs and `- ` lists of a description."""
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if not lines[0].startswith("- "):
            blocks.append(element("p", inline(" ".join(lines))))
            continue
        items: list[str] = []
        for line in lines:
            if line.startswith("- "):
                items.append(line.removeprefix("- "))
            else:
                items[-1] += " " + line
        blocks.append(element("ul", [element("li", inline(item)) for item in items]))
    return Html("".join(blocks))


def render_page(document: Mapping[str, Any], json_url: str) -> str:
    """The HTML page of an AsyncAPI 3.0 `document`, linking to its JSON at `json_url`."""
    return _Page(document).render(json_url)


class _Page:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def resolve(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        """What a `{"$ref": "#/..."}` points to, followed until it is not a reference."""
        while "$ref" in value:
            target: Any = self.document
            for key in value["$ref"].removeprefix("#/").split("/"):
                target = target[key.replace("~1", "/").replace("~0", "~")]
            value = target
        return value

    def render(self, json_url: str) -> str:
        info = self.document["info"]
        channels = self.document["channels"]
        contents = element(
            "ul",
            [
                element("li", element("a", element("code", channel["address"]), href=f"#channel-{name}"))
                for name, channel in channels.items()
            ],
        )
        main = element(
            "main",
            element("h1", info["title"]),
            element("p", f"WebSocket API, version {info['version']}", class_="muted"),
            prose(info.get("description", "")),
            element(
                "p", element("a", f"AsyncAPI {self.document['asyncapi']} document (JSON)", href=json_url)
            ),
            element("nav", element("h2", "Channels"), contents, aria_label="Channels"),
            self.connecting(),
            [self.channel(name, channel) for name, channel in channels.items()],
        )
        head = element(
            "head",
            Html('<meta charset="utf-8">'),
            Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            element("title", f"{info['title']}: WebSocket API"),
            element("style", Html(STYLE)),
        )
        return "<!doctype html>\n" + element("html", head, element("body", main), lang="en")

    def connecting(self) -> Html:
        parts: list[Content] = [element("h2", "Connecting")]
        for server in self.document.get("servers", {}).values():
            url = f"{server['protocol']}://{server['host']}{server.get('pathname', '')}"
            parts.append(element("p", "Server: ", element("code", url)))
            schemes = [self.resolve(scheme) for scheme in server.get("security", ())]
            if schemes:
                parts.append(element("p", "Send a bearer token in any one of these ways:"))
                parts.append(
                    element(
                        "ul", [element("li", inline(scheme.get("description", ""))) for scheme in schemes]
                    )
                )
        return element("section", parts, id="connecting")

    def channel(self, name: str, channel: Mapping[str, Any]) -> Html:
        operations = [
            operation
            for operation in self.document.get("operations", {}).values()
            if operation["channel"]["$ref"] == f"#/channels/{name}"
        ]
        parameters = channel.get("parameters", {})
        query = channel.get("bindings", {}).get("ws", {}).get("query")
        received = [operation for operation in operations if operation["action"] == "receive"]
        sent = [
            ref for operation in operations if operation["action"] == "send" for ref in operation["messages"]
        ]
        return element(
            "section",
            element("h2", element("code", channel["address"])),
            prose(channel.get("description", "")),
            self.table(
                "Address parameters",
                [
                    (key, "string", True, inline(parameter.get("description", "")))
                    for key, parameter in parameters.items()
                ],
            ),
            self.schema_table("Query parameters", query) if query else None,
            element("h3", "The client sends"),
            [self.frame(name, operation["messages"][0], operation) for operation in received],
            element("h3", "The server sends"),
            [self.frame(name, ref) for ref in sent],
            id=f"channel-{name}",
        )

    def frame(self, channel: str, ref: Mapping[str, str], operation: Mapping[str, Any] | None = None) -> Html:
        """One message: what it is for, its fields, an example, and the frames that answer it."""
        message = self.resolve(ref)
        summaries = [message.get("summary"), operation.get("summary") if operation else None]
        examples = message.get("examples", ())
        replies = operation.get("reply", {}).get("messages", ()) if operation else ()
        answered = [
            [
                ", " if index else "",
                element("a", element("code", self.resolve(reply)["title"]), href=self.anchor(channel, reply)),
            ]
            for index, reply in enumerate(replies)
        ]
        return element(
            "article",
            element("h4", element("code", message.get("title", message.get("name", "")))),
            [element("p", inline(summary)) for summary in summaries if summary],
            self.schema_table(None, message["payload"]),
            element("pre", json.dumps(examples[0]["payload"], indent=2)) if examples else None,
            element("p", "Answered with: ", answered) if answered else None,
            class_="frame",
            id=self.anchor(channel, ref).removeprefix("#"),
        )

    def anchor(self, channel: str, ref: Mapping[str, str]) -> str:
        return f"#{channel}-{ref['$ref'].rsplit('/', 1)[-1]}"

    def schema_table(self, caption: str | None, schema: Mapping[str, Any]) -> Html | None:
        schema = self.resolve(schema)
        required = set(schema.get("required", ()))
        rows = [
            (name, self.type_name(prop), name in required, self.notes(prop))
            for name, prop in schema.get("properties", {}).items()
        ]
        return self.table(caption, rows)

    def table(self, caption: str | None, rows: list[tuple[str, Content, bool, Content]]) -> Html | None:
        if not rows:
            return None
        titles = ("Name", "Type", "Required", "Notes")
        header = element("tr", [element("th", title, scope="col") for title in titles])
        body = [
            element(
                "tr",
                element("td", element("code", name)),
                element("td", kind),
                element("td", "yes" if needed else "no"),
                element("td", notes),
            )
            for name, kind, needed, notes in rows
        ]
        return element(
            "table",
            element("caption", caption) if caption else None,
            element("thead", header),
            element("tbody", body),
        )

    def type_name(self, schema: Mapping[str, Any]) -> Content:
        if "$ref" in schema:
            target = self.resolve(schema)
            return self.type_name(target) if target else "any JSON"
        if "const" in schema:
            return element("code", json.dumps(schema["const"]))
        if "enum" in schema:
            return self.alternatives([element("code", json.dumps(value)) for value in schema["enum"]], " | ")
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.alternatives([self.type_name(option) for option in schema[key]], " or ")
        kind = schema.get("type")
        if kind == "array":
            return ["array of ", self.type_name(schema.get("items", {}))]
        if kind == "object" and "title" in schema:
            return str(schema["title"])
        if isinstance(kind, str):
            return f"{kind} ({schema['format']})" if "format" in schema else kind
        return "any JSON"

    @staticmethod
    def alternatives(options: list[Content], separator: str) -> Content:
        return [[separator if index else "", option] for index, option in enumerate(options)]

    @staticmethod
    def notes(schema: Mapping[str, Any]) -> Content:
        """The description of a field, then its constraints."""
        constraints: list[Content] = []
        if "minLength" in schema or "maxLength" in schema:
            most = schema.get("maxLength", "any number of")
            constraints.append(f"{schema.get('minLength', 0)} to {most} characters")
        if "minimum" in schema:
            constraints.append(f"at least {schema['minimum']}")
        if "maximum" in schema:
            constraints.append(f"at most {schema['maximum']}")
        if "pattern" in schema:
            constraints.append(["matches ", element("code", schema["pattern"])])
        return [
            inline(schema["description"]) if "description" in schema else None,
            " " if "description" in schema and constraints else None,
            element("span", _Page.alternatives(constraints, ", "), class_="muted") if constraints else None,
        ]
