"""The alert rules, the Grafana dashboard, the scrape config and the runbook against the code.

Every PromQL expression (each alert's ``expr``, each dashboard target's ``expr``) may use only the
series service/metrics.py exports, with the labels they carry and, where a label has a fixed set of
values, one of those values; Prometheus's own ``up`` is the one exception, and its ``job`` must be
a job of ops/prometheus/prometheus.yml. Every alert is complete (``for``, severity, summary,
description) and its runbook_url names a heading of docs/runbooks/exports.md. Every setting the
runbook names is one Settings.from_env reads.

No promtool is needed: the expressions are tokenised here. The tests at the end run the same
checks on broken copies, so a misspelled metric, label or value is known to fail.
"""

from __future__ import annotations

import codecs
import copy
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import ApiMetrics, ExportMetrics
from service.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "ops" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "exports-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbooks" / "exports.md"
COMPOSE = ROOT / "docker-compose.yml"

#: Series Prometheus makes itself for every target, and the labels it attaches to every series.
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance"})}
TARGET_LABELS = frozenset({"job", "instance"})
SEVERITIES = {"critical", "warning"}

_QUEUE = Settings().queue_name
#: The label values the code emits, per metric family: the contract of service/metrics.py. A set
#: is the closed set of values (a matcher must name or match one of them); None is an open label
#: (route templates, methods, status codes). Every labelled family must be listed.
LABELS: dict[str, dict[str, frozenset[str] | None]] = {
    "exports_http_requests": {"route": None, "method": None, "status": None},
    "exports_http_request_duration_seconds": {"route": None, "method": None},
    "exports_jobs": {"status": frozenset({"pending", "running"})},
    "exports_queue_messages": {"queue": frozenset({_QUEUE, f"{_QUEUE}.DQ", f"{_QUEUE}.XQ"})},
    "exports_backlog_read_errors": {"source": frozenset({"database", "broker"})},
    "exports_dependency_up": {"dependency": None},
    "exports_attempts": {
        "outcome": frozenset({"succeeded", "failed", "retrying", "cancelled", "handed_back", "lost"})
    },
    "exports_jobs_finished": {"status": frozenset({"succeeded", "failed", "cancelled"})},
    "exports_export_duration_seconds": {
        "outcome": frozenset({"succeeded", "failed", "retrying", "cancelled", "handed_back", "lost"})
    },
    "exports_housekeeping_actions": {
        "action": frozenset(
            {"expired", "requeued", "failed", "cancelled", "published", "cleaned", "aborted", "pruned_rows"}
        )
    },
}
#: A value used to create a child of a family with an open label.
OPEN_EXAMPLE = "example"


# --- what the code exports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    family: str
    labels: frozenset[str]


def registries() -> Iterator[CollectorRegistry]:
    """The API's and a worker's registry, with a child of every labelled family for every known
    value (a labelled family has no samples until a child exists)."""
    for metrics in (ApiMetrics(), ExportMetrics()):
        for metric in vars(metrics).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            family = metric.describe()[0].name
            spec = LABELS.get(family)
            if spec is None:
                continue
            values = [sorted(allowed) if allowed is not None else [OPEN_EXAMPLE] for allowed in spec.values()]
            for combination in itertools.product(*values):
                metric.labels(**dict(zip(spec, combination, strict=True)))
        yield metrics.registry


def exported_series() -> dict[str, Series]:
    """Every series name the API or a worker exposes (``_total``, ``_bucket``, ``_sum``...), with
    its family and label names (``le`` included on buckets)."""
    series: dict[str, Series] = {}
    for registry in registries():
        for family in registry.collect():
            assert family.samples, (
                f"{family.name} has no samples: list its labels and their values in LABELS "
                "(tests/house/test_observability.py)"
            )
            for sample in family.samples:
                known = series.get(sample.name)
                labels = frozenset(sample.labels) | (known.labels if known else frozenset())
                series[sample.name] = Series(family.name, labels)
    return series


EXPORTED = exported_series()


# --- PromQL -------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    | (?P<number>(?:0[xX][0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
    | (?P<ident>[A-Za-z_:][\w:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.VERBOSE,
)
#: Keywords that take a parenthesised list of label names.
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
#: PromQL's functions and aggregations. Names followed by "(" are calls whatever they are; this
#: list only catches a function that the tokeniser took for a series (a bug in this test).
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg",
    "avg_over_time", "bottomk", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count", "count_over_time", "count_values", "day_of_month", "day_of_week", "day_of_year",
    "days_in_month", "deg", "delta", "deriv", "exp", "floor", "group", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10",
    "log2", "max", "max_over_time", "min", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev", "stddev_over_time", "stdvar",
    "stdvar_over_time", "sum", "sum_over_time", "tan", "tanh", "time", "timestamp", "topk", "vector", "year",
}  # fmt: skip


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[Matcher, ...] = field(default=())


def tokenise(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    return codecs.decode(literal[1:-1], "unicode_escape")


def closing(tokens: list[tuple[str, str]], start: int, opening: str, close: str) -> int:
    """The index of the token that closes the bracket at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i] == ("op", opening):
            depth += 1
        elif tokens[i] == ("op", close):
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {opening}{close}")


def matchers(tokens: list[tuple[str, str]]) -> tuple[Matcher, ...]:
    """``label op "value"`` triples, comma-separated (the tokens between braces)."""
    found: list[Matcher] = []
    items = [token for token in tokens if token != ("op", ",")]
    if len(items) % 3:
        raise ValueError(f"cannot read label matchers {tokens}")
    for (kind, label), (_, op), (value_kind, value) in zip(items[::3], items[1::3], items[2::3], strict=True):
        if kind != "ident" or op not in {"=", "!=", "=~", "!~"} or value_kind != "string":
            raise ValueError(f"cannot read label matcher {label} {op} {value}")
        found.append(Matcher(label, op, unquote(value)))
    return tuple(found)


def without_grouping(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``tokens`` less the grouping clauses (``by (a, b)``, ``on ()``, ``group_left (c)``...), so
    ``sum by (le) (x)`` reads like ``sum (x)`` and label lists never pass for series."""
    kept: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident" and text.lower() in GROUPING and tokens[i + 1 : i + 2] == [("op", "(")]:
            i = closing(tokens, i + 1, "(", ")") + 1
        else:
            kept.append(tokens[i])
            i += 1
    return kept


def selectors(expr: str) -> list[Selector]:
    """Every series selector in ``expr``: a name with its label matchers (bare ``{...}`` selectors
    have no name). Function and aggregation names (followed by "("), keywords, the label lists of
    by/without/on/ignoring/group_left/group_right, ranges and Grafana variables are skipped."""
    tokens = without_grouping(tokenise(expr))
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if (kind, text) == ("op", "["):
            i = closing(tokens, i, "[", "]") + 1
        elif (kind, text) == ("op", "{"):
            end = closing(tokens, i, "{", "}")
            found.append(Selector(None, matchers(tokens[i + 1 : end])))
            i = end + 1
        elif kind == "ident" and following == ("op", "("):
            i += 1  # a function or an aggregation
        elif kind == "ident" and text.lower() in KEYWORDS:
            i += 1
        elif kind == "ident":
            if following == ("op", "{"):
                end = closing(tokens, i + 1, "{", "}")
                found.append(Selector(text, matchers(tokens[i + 2 : end])))
                i = end + 1
            else:
                found.append(Selector(text))
                i += 1
        else:
            i += 1
    return found


def metric_names(expr: str) -> set[str]:
    names = {selector.name for selector in selectors(expr) if selector.name is not None}
    assert not names & FUNCTIONS, f"the tokeniser took a function for a series in {expr!r}"
    return names


def scrape_jobs() -> set[str]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    return {job["job_name"] for job in config["scrape_configs"]}


def problems(exprs: list[tuple[str, str]], jobs: set[str]) -> list[str]:
    """What is wrong with each (where, expr): unknown series, labels the series does not carry,
    values the code never emits, ``up`` of a job Prometheus does not scrape."""
    found: list[str] = []
    for where, expr in exprs:
        try:
            selected = selectors(expr)
        except ValueError as exc:
            found.append(f"{where}: {exc}")
            continue
        if not any(selector.name for selector in selected):
            found.append(f"{where}: selects no series: {expr!r}")
        for selector in selected:
            if selector.name is None:
                found.append(f"{where}: a selector without a metric name: {expr!r}")
                continue
            if selector.name in PROMETHEUS_SERIES:
                labels, values = PROMETHEUS_SERIES[selector.name], {"job": frozenset(jobs)}
            elif selector.name in EXPORTED:
                series = EXPORTED[selector.name]
                labels = series.labels | TARGET_LABELS
                values = {
                    label: allowed
                    for label, allowed in LABELS.get(series.family, {}).items()
                    if allowed is not None
                }
            else:
                found.append(f"{where}: {selector.name} is not a metric the API or the workers export")
                continue
            for matcher in selector.matchers:
                if matcher.label not in labels:
                    found.append(f"{where}: {selector.name} has no label {matcher.label!r}")
                    continue
                allowed = values.get(matcher.label)
                if allowed is None:
                    continue
                # A regex that is a plain alternation (a|b|c) is checked per alternative, so a
                # typo in one alternative is caught too.
                alternatives = (
                    [matcher.value]
                    if matcher.op in {"=", "!="} or re.search(r"[()\[\]]", matcher.value)
                    else matcher.value.split("|")
                )
                for alternative in alternatives:
                    if matcher.op in {"=", "!="}:
                        hits = {alternative} & allowed
                    else:
                        pattern = re.compile(alternative)
                        hits = {value for value in allowed if pattern.fullmatch(value)}
                    if not hits:
                        found.append(
                            f"{where}: {selector.name}{{{matcher.label}{matcher.op}{matcher.value!r}}}: "
                            f"{alternative!r} matches none of {sorted(allowed)}"
                        )
    return found


# --- the files -------------------------------------------------------------------------------------


def load_alerts(text: str | None = None) -> list[dict[str, Any]]:
    document = yaml.safe_load(text if text is not None else ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_exprs(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"alert {rule.get('alert', rule.get('record'))}", str(rule["expr"])) for rule in rules]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, the ones inside (collapsed) rows too."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}", target["expr"])
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: links to their text, lower case, punctuation other
    than hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)):
            base = slug(match.group(1))
            anchor, n = base, 0
            while anchor in anchors:  # GitHub numbers repeated headings
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


RUNBOOK_URL = re.compile(r"(?:\S*/)?docs/runbooks/exports\.md#([\w-]+)")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return load_alerts()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


# --- the tokeniser itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (route, le) (rate(a_bucket{route!~"/x/{org_id}"}[5m]))', {"a_bucket"}),
        ('absent(up{job="x"} == 1)', {"up"}),
        ("a / on (x) group_left (y) b offset 5m", {"a", "b"}),
        ("histogram_quantile(0.99, sum(rate(h_bucket[$__rate_interval])) by (le))", {"h_bucket"}),
        ("(sum(increase(c_total[1h])) or vector(0)) == 0 and on () max(g) > 1e3", {"c_total", "g"}),
        ("max_over_time(g[30m:1m]) > bool 5", {"g"}),
        ('count_values("value", g) unless ignoring (instance) h', {"g", "h"}),
        ("SUM BY (le) (x) AND y", {"x", "y"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("60 * sum without (instance) (rate(n_total[1h30m]))", {"n_total"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_label_matchers_are_read_with_their_values() -> None:
    [selector] = selectors(r'q{queue=~".+\\.XQ", job="a,b"}')
    assert selector == Selector("q", (Matcher("queue", "=~", r".+\.XQ"), Matcher("job", "=", "a,b")))


# --- alerts ----------------------------------------------------------------------------------------


def test_alerts_use_only_exported_metrics_labels_and_values(rules: list[dict[str, Any]]) -> None:
    assert rules, "no alert rules"
    assert problems(alert_exprs(rules), scrape_jobs()) == []


def test_every_alert_is_complete(rules: list[dict[str, Any]]) -> None:
    names = [rule.get("alert") for rule in rules]
    assert all(names), "a rule without an alert name (recording rules are not used here)"
    assert len(names) == len(set(names)), "an alert name is used twice"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: `for` missing or not a duration"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, (
            f"{name}: severity not one of {SEVERITIES}"
        )
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key} annotation"


def test_every_runbook_url_is_the_alerts_own_section_of_the_runbook(rules: list[dict[str, Any]]) -> None:
    anchors = runbook_anchors()
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        match = RUNBOOK_URL.fullmatch(url)
        assert match, f"{rule['alert']}: runbook_url {url!r} does not point into docs/runbooks/exports.md"
        assert match.group(1) == slug(rule["alert"]), f"{rule['alert']}: runbook_url names another section"
        assert match.group(1) in anchors, f"{rule['alert']}: no heading {rule['alert']!r} in the runbook"


def test_the_brief_alerts_are_all_there(rules: list[dict[str, Any]]) -> None:
    exprs = " ".join(str(rule["expr"]) for rule in rules)
    for needed in (
        'exports_jobs_finished_total{status="failed"}',  # failure rate
        "exports_oldest_pending_job_age_seconds",
        "exports_queue_messages{queue=~",  # dead letters
        'up{job="analytics-exports-worker"}',
        'up{job="analytics-exports-api"}',
        'status=~"5.."',
        "histogram_quantile(0.99",
        "exports_backlog_read_errors_total",
        "exports_storage_retries_total",
        'exports_jobs_finished_total{status="succeeded"}',  # stuck pipeline
    ):
        assert needed in exprs, f"no alert uses {needed}"


# --- scrape config ---------------------------------------------------------------------------------


def test_scrape_jobs_are_the_ones_the_alerts_and_the_dashboard_use(
    rules: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    jobs = scrape_jobs()
    assert jobs == {"analytics-exports-api", "analytics-exports-worker"}
    used = {
        matcher.value
        for _, expr in alert_exprs(rules) + dashboard_exprs(dashboard)
        for selector in selectors(expr)
        if selector.name == "up"
        for matcher in selector.matchers
        if matcher.label == "job"
    }
    assert used == jobs, (
        f"up{{job=...}} in the rules or the dashboard: {sorted(used)}; scraped: {sorted(jobs)}"
    )


def test_prometheus_scrapes_the_compose_services_on_the_ports_the_code_listens_on() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert (PROMETHEUS.parent / "alerts.yml").resolve() in {
        (PROMETHEUS.parent / path).resolve() for path in config["rule_files"]
    }
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    defaults = Settings()

    api = jobs["analytics-exports-api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    [target] = [t for static in api["static_configs"] for t in static["targets"]]
    host, port = target.rsplit(":", 1)
    assert host in services
    assert int(port) == defaults.metrics_port  # the API's /metrics is on its internal port

    worker = jobs["analytics-exports-worker"]
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    [dns] = worker["dns_sd_configs"]
    assert dns["type"] == "A"
    assert dns["names"] == ["worker"]
    assert "worker" in services
    assert dns["port"] == defaults.metrics_port


# --- dashboard ---------------------------------------------------------------------------------


def test_dashboard_uses_only_exported_metrics_labels_and_values(dashboard: dict[str, Any]) -> None:
    assert problems(dashboard_exprs(dashboard), scrape_jobs()) == []


def test_dashboard_panels_have_unique_ids_and_queries(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel.get("id") for panel in panels]
    assert None not in ids, "a panel without an id"
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    for panel in panels:
        if panel["type"] == "row":  # a row only groups the panels below it
            assert not panel.get("targets"), f"row {panel['title']!r} has queries"
            continue
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['id']} {panel.get('title')!r} has no query"
        assert all(str(target.get("expr", "")).strip() for target in targets), (
            f"panel {panel['id']}: empty expr"
        )
        refs = [target.get("refId") for target in targets]
        assert len(refs) == len(set(refs)), f"panel {panel['id']}: refIds repeat"
        assert {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})), f"panel {panel['id']} has no gridPos"


def test_dashboard_queries_go_to_the_prometheus_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        for owner in (panel, *panel["targets"]):
            assert owner.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", f"panel {panel['id']}"


def test_dashboard_shows_every_exported_metric(dashboard: dict[str, Any]) -> None:
    shown = {
        EXPORTED[name].family
        for _, expr in dashboard_exprs(dashboard)
        for name in metric_names(expr)
        if name in EXPORTED
    }
    families = {series.family for series in EXPORTED.values()}
    assert families - shown == set(), "exported but on no panel of the dashboard"


# --- runbook ---------------------------------------------------------------------------------------


def settings_variables() -> set[str]:
    """Every variable Settings.from_env reads."""
    return {variable.name for variable in VARIABLES}


def test_runbook_names_only_settings_the_code_reads() -> None:
    variables = settings_variables()
    assert {"AUTH_JWT_SECRET", "AUTH_JWT_PREVIOUS_SECRETS", "EXPORT_RETRY_WINDOW"} <= variables
    named = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", RUNBOOK.read_text()))
    assert named - variables == set(), "the runbook names variables no setting reads"


def test_runbook_names_only_exported_metrics() -> None:
    named = set(re.findall(r"\bexports_[a-z0-9_]+\b", RUNBOOK.read_text()))
    known = set(EXPORTED) | {series.family for series in EXPORTED.values()}
    assert named - known == set(), "the runbook names metrics the code does not export"


# --- the checks can fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("good", "broken", "complaint"),
    [
        # a misspelled metric
        ("exports_oldest_pending_job_age_seconds", "exports_oldest_pending_job_age_second", "not a metric"),
        # a counter without its _total suffix
        ("exports_storage_retries_total", "exports_storage_retries", "not a metric"),
        # a label the series does not carry
        ('exports_jobs{status="pending"}', 'exports_jobs{state="pending"}', "has no label 'state'"),
        # a value the code never emits
        ('action=~"requeued|failed"', 'action=~"reqeued"', "matches none of"),
        ('action=~"requeued|failed"', 'action=~"requeued|faild"', "'faild' matches none of"),
        ('status=~"succeeded|failed"', 'status=~"succeeded|failed|expired"', "'expired' matches none of"),
        # up of a job Prometheus does not scrape
        ('up{job="analytics-exports-worker"}', 'up{job="analytics-exports-workers"}', "matches none of"),
    ],
)
def test_a_broken_copy_of_the_alerts_fails(good: str, broken: str, complaint: str) -> None:
    text = ALERTS.read_text()
    assert good in text
    found = problems(alert_exprs(load_alerts(text.replace(good, broken))), scrape_jobs())
    assert any(complaint in problem for problem in found), found


def test_a_broken_copy_of_the_dashboard_fails(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    [panel] = [p for p in all_panels(broken["panels"]) if "Rows exported" in p.get("title", "")]
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace(
        "exports_rows_total", "exports_row_total"
    )
    assert any(
        "exports_row_total is not a metric" in p for p in problems(dashboard_exprs(broken), scrape_jobs())
    )


def test_a_runbook_url_to_a_missing_section_fails(rules: list[dict[str, Any]]) -> None:
    assert "exportsnosuchalert" not in runbook_anchors()
    assert slug("ExportsApiDown") in runbook_anchors()
    assert RUNBOOK_URL.fullmatch("https://example.com/repo/blob/main/docs/runbooks/exports.md#exportsapidown")
    assert not RUNBOOK_URL.fullmatch("docs/runbooks/other.md#exportsapidown")


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("ExportsApiDown", "exportsapidown"),
        ("Stuck or failed jobs", "stuck-or-failed-jobs"),
        ("The dead-letter queue (`exports.XQ`)", "the-dead-letter-queue-exportsxq"),
        ("Rotating the JWT secret: HS256", "rotating-the-jwt-secret-hs256"),
        ("`exports_jobs` and [the sweep](#x)", "exports_jobs-and-the-sweep"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
