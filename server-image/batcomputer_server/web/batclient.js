"use strict";
(function () {
  // The page may be served at "/" or under an Ingress prefix such as "/models/crime/":
  // every request is made relative to the address the browser used.
  const base = window.location.pathname.replace(/[^/]*$/, "");
  const fields = document.getElementById("fields");
  const form = document.getElementById("inputs");
  const button = document.getElementById("score");
  const errorBox = document.getElementById("error");
  const results = document.getElementById("results");
  let inputs = [];

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([key, value]) => node.setAttribute(key, value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function describeRange(input) {
    const low = input.minimum, high = input.maximum;
    if (low !== null && high !== null) return `${low} to ${high}`;
    if (low !== null) return `at least ${low}`;
    if (high !== null) return `at most ${high}`;
    return "any number";
  }

  function buildForm(params) {
    inputs = params.inputs;
    document.getElementById("model-name").textContent = params.name;
    document.getElementById("model-version").textContent = "v" + params.version;
    document.title = `${params.name} ${params.version} · batclient`;
    fields.replaceChildren();
    inputs.forEach((input) => {
      const row = element("div", { class: "field", id: `field-${input.name}` });
      row.appendChild(element("label", { for: `input-${input.name}` }, input.name));
      let control;
      if (input.type === "categorical") {
        control = element("select", { id: `input-${input.name}`, name: input.name });
        input.values.forEach((value) => control.appendChild(element("option", { value }, value)));
        control.value = params.example[input.name];
      } else {
        control = element("input", {
          id: `input-${input.name}`, name: input.name, type: "number", required: "",
          step: input.type === "integer" ? "1" : "any",
        });
        if (input.minimum !== null) control.min = input.minimum;
        if (input.maximum !== null) control.max = input.maximum;
        control.value = params.example[input.name];
      }
      row.appendChild(control);
      if (input.type !== "categorical") {
        const kind = input.type === "integer" ? "whole number" : "number";
        row.appendChild(element("div", { class: "hint" }, `${kind}, ${describeRange(input)}`));
      }
      fields.appendChild(row);
    });
    button.disabled = false;
  }

  function collect() {
    const body = {};
    inputs.forEach((input) => {
      const raw = form.elements[input.name].value;
      body[input.name] = input.type === "categorical" || raw.trim() === "" ? raw : Number(raw);
    });
    return body;
  }

  function showResults(probabilities) {
    const ranked = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
    results.replaceChildren();
    ranked.forEach(([flag, probability], index) => {
      const item = element("li", { class: index === 0 ? "result top" : "result", "data-flag": flag });
      const label = element("div", { class: "label" });
      label.appendChild(element("span", { class: "flag" }, flag));
      label.appendChild(element("span", { class: "percent" }, `${(probability * 100).toFixed(1)}%`));
      const track = element("div", {
        class: "track", role: "meter", "aria-label": flag,
        "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(probability),
      });
      const bar = element("div", { class: "bar" });
      track.appendChild(bar);
      item.append(label, track);
      results.appendChild(item);
      requestAnimationFrame(() => { bar.style.width = `${(probability * 100).toFixed(2)}%`; });
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    document.querySelectorAll(".field.invalid").forEach((row) => row.classList.remove("invalid"));
    button.disabled = true;
    try {
      const response = await fetch(base + "api/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(collect()),
      });
      const body = await response.json();
      if (!response.ok) {
        if (body.field) {
          const row = document.getElementById(`field-${body.field}`);
          if (row) row.classList.add("invalid");
        }
        const allowed = Array.isArray(body.allowed) ? ` Allowed: ${body.allowed.join(", ")}.`
          : body.allowed ? ` Allowed: ${describeRange(body.allowed)}.` : "";
        showError(body.error + allowed);
        return;
      }
      showResults(body);
    } catch (failure) {
      showError(`Could not reach the model: ${failure}`);
    } finally {
      button.disabled = false;
    }
  });

  fetch(base + "api/predict/params")
    .then(async (response) => {
      const body = await response.json();
      if (!response.ok) throw new Error(body.error);
      buildForm(body);
    })
    .catch((failure) => showError(`The model is not available: ${failure.message}`));
})();
