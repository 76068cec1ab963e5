"""Drive a running Dash app over HTTP exactly as dash-renderer does, without a browser.

The renderer loads ``/_dash-layout`` and ``/_dash-dependencies`` once per page, then for each
callback POSTs to ``/_dash-update-component`` a body of this shape (dash-renderer's
``handleServerside`` / ``fillVals``, read by ``Dash._initialize_context``)::

    {
      "output": "<callback id: 'id.prop', or '..id1.p1...id2.p2..' for multi outputs>",
      "outputs": {"id": ID, "property": PROP}          # single output
               | [{"id": ID, "property": PROP}, ...],  # multi outputs (one per Output)
      "inputs": [{"id": ID, "property": PROP, "value": V}, ...],
      "changedPropIds": ["<stringified id>.<prop>", ...],   # [] on the initial call
      "parsedChangedPropsIds": [...],                  # same, pattern ids parsed back to dicts
      "state": [{"id": ID, "property": PROP, "value": V}, ...],   # absent if no State
    }

ID is the component's id as in the layout: a string, or a dict for pattern-matching ids. An
Output/Input/State whose id uses ``ALL``/``ALLSMALLER`` stands for a *list* of such entries (one
per matching component); ``MATCH`` is replaced by the value of the component that triggered.
``output`` keeps an ``@<hash>`` suffix of ``allow_duplicate`` outputs, and so do the
``property`` fields of ``outputs``. Pattern ids are stringified with sorted keys and no spaces
(``{"index":1,"type":"cell"}``), as dash does on both sides.

The answer is ``{"multi": true, "response": {id: {prop: value}}, "sideUpdate": {...}}`` or an
empty 204 when the callback raised ``PreventUpdate`` (or returned only ``no_update``).

Usage::

    client = DashClient("http://127.0.0.1:8050")
    client.find_component("slider")["value"]
    client.call("graph.figure", {"slider.value": 3})
    client.call("..a.children...b.children..", {"button.n_clicks": 1}, state={"name.value": "x"})

Inputs and state the caller does not give are taken from the layout's initial props (None when
the component or the prop is absent), as for a page that was just loaded.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urljoin

import requests

__all__ = ["DashClient", "DashCallbackError", "stringify_id", "prop_key"]

_WILDCARDS = ("MATCH", "ALL", "ALLSMALLER")


class DashCallbackError(RuntimeError):
    """The server answered a callback request with an error status."""

    def __init__(self, status_code, text, output):
        self.status_code = status_code
        self.text = text
        self.output = output
        super().__init__(f"callback {output!r} failed with HTTP {status_code}: {text[:2000]}")


# --- ids ---------------------------------------------------------------------------------------


def stringify_id(component_id) -> str:
    """Id as dash writes it in callback ids and responses: dicts as sorted, compact JSON."""
    if isinstance(component_id, dict):
        return "{" + ",".join(
            f"{json.dumps(k)}:{json.dumps(component_id[k])}" for k in sorted(component_id)
        ) + "}"
    return component_id


def _parse_id(id_str: str):
    """Inverse of `stringify_id` (wildcards stay as one-item lists such as ``["MATCH"]``)."""
    if isinstance(id_str, str) and id_str.startswith("{"):
        return json.loads(id_str)
    return id_str


def _split_prop_key(key: str):
    """``'id.prop'`` -> (id, prop); the id may be a JSON dict containing dots."""
    if not isinstance(key, str) or "." not in key:
        raise ValueError(f"expected 'component_id.property', got {key!r}")
    id_str, prop = key.rsplit(".", 1)
    return _parse_id(id_str.replace("\\.", ".")), prop


def prop_key(component_id, prop: str) -> str:
    """Canonical ``'id.prop'`` key, e.g. ``prop_key({"type": "t", "index": 1}, "value")``."""
    return f"{stringify_id(component_id)}.{prop}"


def _normalize_key(key: str) -> str:
    component_id, prop = _split_prop_key(key)
    return prop_key(component_id, prop)


def _wild(value):
    """'MATCH' / 'ALL' / 'ALLSMALLER' if `value` is a serialized wildcard, else None."""
    if isinstance(value, list) and len(value) == 1 and value[0] in _WILDCARDS:
        return value[0]
    return None


def _has_wild(component_id, kinds=_WILDCARDS) -> bool:
    return isinstance(component_id, dict) and any(_wild(v) in kinds for v in component_id.values())


def _sort_key(value):
    """dash-renderer's ``idValSort`` order: numbers, then False/True, then other strings."""
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    if isinstance(value, str):
        try:
            return (0, float(value), "")
        except ValueError:
            return (2, 0.0, value)
    return (3, 0.0, str(value))


def _pattern_matches(pattern, concrete, binding=None) -> bool:
    """Does the concrete id `concrete` match dependency id `pattern`?

    Without `binding`, MATCH and ALLSMALLER match any value (used to find the callback). With
    a `binding` {key: value}, MATCH must equal it and ALLSMALLER must sort before it.
    """
    if not isinstance(pattern, dict) or not isinstance(concrete, dict):
        return pattern == concrete
    if set(pattern) != set(concrete):
        return False
    for key, want in pattern.items():
        have = concrete[key]
        kind = _wild(want)
        if kind is None:
            if want != have:
                return False
        elif _wild(have) is not None:
            if _wild(have) != kind:
                return False
        elif binding is not None and kind == "MATCH" and key in binding:
            if have != binding[key]:
                return False
        elif binding is not None and kind == "ALLSMALLER" and key in binding:
            if not _sort_key(have) < _sort_key(binding[key]):
                return False
    return True


# --- layout ------------------------------------------------------------------------------------


def _is_component(node) -> bool:
    return isinstance(node, dict) and "props" in node and "type" in node and "namespace" in node


def iter_components(node):
    """(id, props) of every component that has an id, in layout order (depth first)."""
    if _is_component(node):
        props = node.get("props") or {}
        if props.get("id") is not None:
            yield props["id"], props
        for value in props.values():
            yield from iter_components(value)
    elif isinstance(node, dict):
        for value in node.values():
            yield from iter_components(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from iter_components(value)


# --- dependencies ------------------------------------------------------------------------------


class _Spec:
    """One Output / Input / State of a callback: parsed id and property (raw, with @hash)."""

    def __init__(self, component_id, prop):
        self.id = component_id
        self.raw_prop = prop
        self.prop = prop.split("@", 1)[0]

    @property
    def multi(self) -> bool:
        """Stands for a list of components (ALL / ALLSMALLER)."""
        return _has_wild(self.id, ("ALL", "ALLSMALLER"))

    @property
    def pattern(self) -> bool:
        return _has_wild(self.id)

    def __repr__(self):
        return f"{stringify_id(self.id)}.{self.raw_prop}"


def _output_specs(dep) -> list[_Spec]:
    if dep.get("no_output"):
        return []
    output = dep["output"]
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return [_Spec(*_split_prop_key(part)) for part in parts]


def _dep_specs(entries) -> list[_Spec]:
    return [_Spec(_parse_id(e["id"]), e["property"]) for e in entries or []]


# --- client ------------------------------------------------------------------------------------


class DashClient:
    """HTTP client speaking dash-renderer's protocol to the Dash app at `base_url`.

    Parameters
    ----------
    base_url : str
        Root of the app, including its ``routes_pathname_prefix`` (e.g. ``http://host:8050/``).
    session : requests.Session, optional
        Carries cookies (and the CSRF cookie, echoed as a header like the renderer does).
    timeout : float
        Seconds allowed for each HTTP request.
    """

    def __init__(
        self,
        base_url: str,
        session: requests.Session | None = None,
        timeout: float = 120.0,
        csrf_token_name: str = "_csrf_token",
        csrf_header_name: str = "X-CSRFToken",
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.session = session if session is not None else requests.Session()
        self.timeout = timeout
        self.csrf_token_name = csrf_token_name
        self.csrf_header_name = csrf_header_name
        self._layout = None
        self._dependencies = None
        self.last_body = None  # the last POST body, for debugging

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def _get_json(self, path):
        response = self.session.get(self.url(path), timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    # page load ----------------------------------------------------------------------------------

    def layout(self) -> dict:
        """GET /_dash-layout (as a page load does); kept as the layout used for defaults."""
        self._layout = self._get_json("_dash-layout")
        return self._layout

    def dependencies(self) -> list:
        """GET /_dash-dependencies: the callback specs, as the renderer receives them."""
        self._dependencies = self._get_json("_dash-dependencies")
        return self._dependencies

    def _current_layout(self):
        return self._layout if self._layout is not None else self.layout()

    def _current_dependencies(self):
        return self._dependencies if self._dependencies is not None else self.dependencies()

    def components(self) -> dict:
        """{stringified id: props} of every component with an id in the layout."""
        return {stringify_id(cid): props for cid, props in iter_components(self._current_layout())}

    def find_component(self, component_id) -> dict:
        """Initial props of the component `component_id` (a str, a dict or a dict's JSON)."""
        key = stringify_id(_parse_id(component_id))
        for cid, props in iter_components(self._current_layout()):
            if stringify_id(cid) == key:
                return props
        raise KeyError(f"no component with id {key!r} in the layout")

    # callbacks ----------------------------------------------------------------------------------

    def find_callback(self, output: str, inputs=None) -> dict:
        """The server-side callback (dependency dict) that `output` designates.

        `output` is the callback's exact output string from /_dash-dependencies, or one
        ``"id.prop"`` among its outputs (a concrete pattern id such as
        ``'{"index":2,"type":"cell"}.children'`` matches a MATCH/ALL output). When several
        callbacks write that prop (``allow_duplicate``), the keys of `inputs` pick the one.
        """
        deps = self._current_dependencies()
        want_id, want_prop = _split_prop_key(output)
        want_prop_clean = want_prop.split("@", 1)[0]
        exact = [d for d in deps if d["output"] == output]
        contained = [
            d
            for d in deps
            if any(
                s.prop == want_prop_clean
                and (s.raw_prop == want_prop or "@" not in want_prop)
                and _pattern_matches(s.id, want_id)
                for s in _output_specs(d)
            )
        ]

        def accepts(dep):
            return all(
                any(s.prop == p and _pattern_matches(s.id, i) for s in _dep_specs(dep["inputs"]))
                for i, p in (_split_prop_key(k) for k in inputs)
            )

        found = exact or contained
        if inputs and not all(accepts(d) for d in found):
            # e.g. an allow_duplicate output: the given inputs tell which callback is meant
            found = [d for d in found if accepts(d)] or [d for d in contained if accepts(d)] or found
        if not found:
            known = "\n  ".join(d["output"] for d in deps)
            raise KeyError(f"no callback has output {output!r}; callbacks:\n  {known}")
        if len(found) > 1:
            names = ", ".join(d["output"] for d in found)
            raise ValueError(
                f"{output!r} is ambiguous, give the exact output string or the inputs: {names}"
            )
        dep = found[0]
        if dep.get("clientside_function"):
            raise ValueError(f"callback {dep['output']!r} is clientside; it never reaches the server")
        return dep

    def build_request(self, output: str, inputs=None, state=None, triggered=None):
        """(dependency, JSON body) of the request the renderer would POST for this call."""
        inputs = {_normalize_key(k): v for k, v in (inputs or {}).items()}
        state = {_normalize_key(k): v for k, v in (state or {}).items()}
        if triggered is None:
            triggered = list(inputs)
        elif isinstance(triggered, str):
            triggered = [triggered]
        triggered = [_normalize_key(k) for k in triggered]

        dep = self.find_callback(output, inputs)
        out_specs = _output_specs(dep)
        in_specs = _dep_specs(dep["inputs"])
        state_specs = _dep_specs(dep["state"])

        # Components the call can refer to: the layout's, then any the caller names.
        known = {stringify_id(cid): (cid, props) for cid, props in iter_components(self._current_layout())}
        for key in [output, *inputs, *state, *triggered]:
            if key.startswith("..") or not key.startswith("{"):
                continue
            cid, _ = _split_prop_key(key)
            if not _has_wild(cid):
                known.setdefault(stringify_id(cid), (cid, {}))

        binding = self._match_binding(output, out_specs, in_specs, state_specs, inputs, state, triggered, known)

        def concrete(spec):
            """The {id, property} entries a spec stands for (a list if it is multi-valued)."""
            if not spec.pattern:
                return {"id": spec.id, "property": spec.raw_prop}
            if not spec.multi:
                cid = {k: (binding[k] if _wild(v) == "MATCH" else v) for k, v in spec.id.items()}
                return {"id": cid, "property": spec.raw_prop}
            return [
                {"id": cid, "property": spec.raw_prop}
                for cid, _props in known.values()
                if _pattern_matches(spec.id, cid, binding)
            ]

        def with_values(spec, given):
            entries = concrete(spec)

            def fill(entry):
                key = prop_key(entry["id"], spec.prop)
                if key in given:
                    value = given[key]
                else:
                    value = known.get(stringify_id(entry["id"]), (None, {}))[1].get(spec.prop)
                return {**entry, "value": value}, key

            if isinstance(entries, list):
                filled = [fill(e) for e in entries]
                return [f for f, _ in filled], [k for _, k in filled]
            entry, key = fill(entries)
            return entry, [key]

        body_inputs, input_keys = [], []
        for spec in in_specs:
            entry, keys = with_values(spec, inputs)
            body_inputs.append(entry)
            input_keys.extend(keys)
        body_state, state_keys = [], []
        for spec in state_specs:
            entry, keys = with_values(spec, state)
            body_state.append(entry)
            state_keys.extend(keys)

        for given, allowed, kind in ((inputs, input_keys, "Input"), (state, state_keys, "State")):
            unknown = [k for k in given if k not in allowed]
            if unknown:
                raise ValueError(
                    f"{unknown} are not {kind}s of callback {dep['output']!r} "
                    f"({kind}s: {allowed or 'none'})"
                )
        bad_triggers = [k for k in triggered if k not in input_keys]
        if bad_triggers:
            raise ValueError(
                f"triggered {bad_triggers} are not Inputs of callback {dep['output']!r} "
                f"(Inputs: {input_keys})"
            )

        body = {"output": dep["output"]}
        outputs = [concrete(s) for s in out_specs]
        if dep["output"].startswith(".."):
            body["outputs"] = outputs
        elif outputs:
            body["outputs"] = outputs[0]
        body["inputs"] = body_inputs
        body["changedPropIds"] = triggered
        body["parsedChangedPropsIds"] = [
            _split_prop_key(k)[0] if k.startswith("{") else k for k in triggered
        ]
        if state_specs:
            body["state"] = body_state
        return dep, body

    @staticmethod
    def _match_binding(output, out_specs, in_specs, state_specs, inputs, state, triggered, known):
        """Values of the MATCH keys for this call, from the concrete ids the caller gave."""
        match_keys = {
            k
            for s in (*out_specs, *in_specs, *state_specs)
            if isinstance(s.id, dict)
            for k, v in s.id.items()
            if _wild(v) == "MATCH"
        }
        if not match_keys:
            return {}
        binding = {}

        def bind(spec, cid):
            if not isinstance(cid, dict) or _has_wild(cid) or not _pattern_matches(spec.id, cid):
                return
            for key, value in spec.id.items():
                if _wild(value) == "MATCH":
                    if key in binding and binding[key] != cid[key]:
                        raise ValueError(
                            f"conflicting MATCH values for {key!r}: {binding[key]!r} and {cid[key]!r}"
                        )
                    binding[key] = cid[key]

        candidates = []
        if not output.startswith(".."):
            candidates.append((out_specs, _split_prop_key(output)))
        for keys, specs in ((triggered, in_specs), (inputs, in_specs), (state, state_specs)):
            candidates.extend((specs, _split_prop_key(k)) for k in keys)
        for specs, (cid, prop) in candidates:
            for spec in specs:
                if spec.prop == prop.split("@", 1)[0] and not spec.multi:
                    bind(spec, cid)
        missing = match_keys - set(binding)
        if missing:
            # Like a page with one matching component: take it if it is the only one.
            options = set()
            for spec in (*out_specs, *in_specs):
                if spec.pattern and not spec.multi:
                    for cid, _props in known.values():
                        if _pattern_matches(spec.id, cid):
                            options.add(tuple(sorted((k, json.dumps(cid[k])) for k in missing)))
            if len(options) != 1:
                raise ValueError(
                    f"cannot tell which component the MATCH key(s) {sorted(missing)} designate: "
                    "give a concrete pattern id in `output`, `inputs` or `triggered`"
                )
            binding.update({k: json.loads(v) for k, v in options.pop()})
        return binding

    def _post(self, body):
        headers = {"Accept": "application/json"}
        token = self.session.cookies.get(self.csrf_token_name)
        if token:
            headers[self.csrf_header_name] = token
        self.last_body = body
        return self.session.post(
            self.url("_dash-update-component"), json=body, headers=headers, timeout=self.timeout
        )

    @staticmethod
    def _parse(response, output):
        if response.status_code == 204:
            return {}
        if response.status_code != 200:
            raise DashCallbackError(response.status_code, response.text, output)
        data = response.json()
        result = {k: dict(v) for k, v in (data.get("response") or {}).items()}
        for cid, props in (data.get("sideUpdate") or {}).items():
            result.setdefault(cid, {}).update(props)
        return result

    def call(self, output: str, inputs=None, state=None, triggered=None) -> dict:
        """Run the callback writing `output` on the server; return ``{id: {prop: value}}``.

        Parameters
        ----------
        output : str
            The callback's exact output string, or one ``"id.prop"`` of its outputs.
        inputs, state : dict, optional
            ``{"id.prop": value}``; inputs and state not given take the layout's initial props.
        triggered : str or list of str, optional
            The changed Inputs (``changedPropIds``). Default: the keys of `inputs`; no keys
            (``[]``) is the initial call made when the page loads.

        Returns
        -------
        dict
            The ``response`` part of the answer (ids stringified as dash does), with any
            ``set_props`` side updates merged in; ``{}`` for a 204 (``PreventUpdate``).
        """
        dep, body = self.build_request(output, inputs, state, triggered)
        return self._parse(self._post(body), dep["output"])

    def timed_call(self, output: str, inputs=None, state=None, triggered=None):
        """Like `call`; returns (response dict, seconds for the POST, bytes of the answer)."""
        dep, body = self.build_request(output, inputs, state, triggered)
        start = time.perf_counter()
        response = self._post(body)
        content = response.content
        seconds = time.perf_counter() - start
        return self._parse(response, dep["output"]), seconds, len(content)
