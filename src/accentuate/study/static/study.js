/* The participant page of an accentuate study (written by accentuate.study.page.write_page).

   Reads the study from the JSON in #study-data and runs it with jsPsych 8: preload the images,
   consent, instructions, every trial in an order of the participant's own (seeded by the study
   and participant ids), the end. Every trial row of the data
   has trial_id, condition, feature, feature_kind, catch, position, chosen (0 left, 1 right),
   rt (ms) and response_source ("keyboard" or "mouse"); every row has study_id and participant.
   The page does not know the answers: the analysis scores the trials from trials.json. At the end the data is downloaded and, over http(s), sent to `responses`. */
"use strict";

(function () {
  const study = JSON.parse(document.getElementById("study-data").textContent);
  const ID = /^[A-Za-z0-9_-]{1,64}$/;
  const QUESTION = "On which of these two photos is the feature stronger?";

  function esc(text) {
    const codes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
    return String(text).replace(/[&<>"']/g, (c) => codes[c]);
  }

  /* The participant: the URL's `participant` (or Prolific's PROLIFIC_PID) when it is a valid
     id, else a random one. */
  function participantId() {
    const params = new URLSearchParams(window.location.search);
    for (const name of ["participant", "PROLIFIC_PID"]) {
      const value = params.get(name);
      if (value !== null && ID.test(value)) {
        return value;
      }
    }
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /* The trials in the order of one participant: a Fisher-Yates shuffle driven by a generator
     (mulberry32) seeded with a hash (FNV-1a) of the study and participant ids, so each participant
     has an order of their own, the same one again if the page is reloaded. */
  function orderFor(key, trials) {
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) {
      h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
    }
    const next = () => {
      h = (h + 0x6d2b79f5) >>> 0;
      let t = h;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const out = trials.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  const participant = participantId();
  const jsPsych = initJsPsych({ show_progress_bar: true, message_progress_bar: "Progress" });
  jsPsych.data.addProperties({ study_id: study.study_id, participant: participant });
  let declined = false;

  function thumbs(kind, title, paths) {
    const images = paths.map((p) => `<img src="${esc(p)}" alt="">`).join("");
    return `<div class="study-refs study-refs-${kind}"><p class="study-refs-label">${title}</p>` +
      `<div class="study-thumbs">${images}</div></div>`;
  }

  /* The screen above the two photos: the feature's name (when the study shows names), the
     strongly and the weakly activating references, the question. */
  function stimulus(trial) {
    let html = `<div class="study-trial" data-trial-id="${esc(trial.id)}" data-condition="${esc(trial.condition)}">`;
    if (study.show_feature_names) {
      html += `<p class="study-feature">Feature: <span class="study-feature-name">${esc(trial.feature)}</span></p>`;
    }
    const refs = trial.references;
    if (refs.strong.length || refs.weak.length) {
      html += '<div class="study-references">' +
        thumbs("strong", "<strong>Strong</strong> The feature is strong in these", refs.strong) +
        thumbs("weak", "<strong>Weak</strong> The feature is weak in these", refs.weak) + "</div>";
    } else {
      html += '<p class="study-no-refs">No examples on this screen: make your best guess.</p>';
    }
    const keys = study.key_labels;
    return html + `<p class="study-question">${QUESTION}</p><p class="study-hint">Press ` +
      `<kbd>${esc(keys.left)}</kbd> for the left photo or <kbd>${esc(keys.right)}</kbd> for the right one, ` +
      "or click a photo.</p></div>";
  }

  function query(trial, side) {
    const where = side ? "right" : "left";
    const key = side ? study.key_labels.right : study.key_labels.left;
    return `<button type="button" class="study-query" data-side="${side}">` +
      `<img src="${esc(trial.queries[side])}" alt="the ${where} photo">` +
      `<span class="study-key"><kbd>${esc(key)}</kbd> ${where}</span></button>`;
  }

  /* One trial: the queries are the plugin's buttons; the left and right keys click them, so
     the plugin records one response (with its rt) whichever way it came. */
  function trialNode(trial, position) {
    let source = null;
    let listener = null;
    return {
      type: jsPsychHtmlButtonResponse,
      stimulus: stimulus(trial),
      choices: ["left", "right"],
      button_html: (choice, side) => query(trial, side),
      button_layout: "flex",
      data: {
        phase: "trial", trial_id: trial.id, condition: trial.condition, feature: trial.feature,
        feature_kind: trial.feature_kind, catch: trial.catch, position: position,
      },
      on_load: () => {
        const group = document.getElementById("jspsych-html-button-response-btngroup");
        group.addEventListener("click", (event) => {
          if (source === null) {
            source = event.detail === 0 ? "keyboard" : "mouse";  // 0: activated by a key, not a pointer
          }
        }, true);
        listener = jsPsych.pluginAPI.getKeyboardResponse({
          callback_function: (info) => {
            const side = jsPsych.pluginAPI.compareKeys(info.key, study.keys.left) ? 0 : 1;
            source = "keyboard";
            group.querySelector(`[data-choice="${side}"]`).click();
          },
          valid_responses: [study.keys.left, study.keys.right],
          rt_method: "performance",
          persist: false,
          allow_held_key: false,
        });
      },
      on_finish: (data) => {
        jsPsych.pluginAPI.cancelKeyboardResponse(listener);  // jsPsych keeps listeners past the trial
        delete data.stimulus;
        data.chosen = data.response;
        data.response_source = source;
      },
    };
  }

  function consentNode() {
    return {
      type: jsPsychHtmlButtonResponse,
      stimulus: `<div class="study-text study-consent">${study.consent}</div>`,
      choices: ["I agree", "I do not agree"],
      button_html: (choice, i) => `<button type="button" class="jspsych-btn study-answer-${i ? "no" : "yes"}">` +
        `${esc(choice)}</button>`,
      button_layout: "flex",
      data: { phase: "consent" },
      on_finish: (data) => {
        delete data.stimulus;
        data.consent = data.response === 0;
        declined = data.response !== 0;
      },
    };
  }

  function timeline() {
    const nodes = [{
      type: jsPsychPreload,
      images: study.images,
      show_progress_bar: false,
      message: '<p class="study-loading">Loading the photos…</p>',
      error_message: '<p class="study-loading">Some photos of the study could not be loaded. Please reload ' +
        "the page; if this happens again, tell the researchers.</p>",
      data: { phase: "preload" },
    }];
    if (study.consent !== null) {
      nodes.push(consentNode());
    }
    const rest = [];
    if (study.pages.length) {
      rest.push({
        type: jsPsychInstructions,
        pages: study.pages.map((p) => `<div class="study-text">${p}</div>`),
        show_clickable_nav: true,
        show_page_number: study.pages.length > 1,
        button_label_previous: "Back",
        button_label_next: "Next",
        data: { phase: "instructions" },
      });
    }
    const order = orderFor(study.study_id + ":" + participant, study.trials);
    order.forEach((trial, i) => rest.push(trialNode(trial, i + 1)));
    nodes.push({ timeline: rest, conditional_function: () => !declined });
    return nodes;
  }

  function showText(className, paragraphs) {
    const box = document.createElement("div");
    box.className = `study-text ${className}`;
    for (const [tag, text, id] of paragraphs) {
      const el = document.createElement(tag);
      el.textContent = text;
      if (id) {
        el.id = id;
      }
      box.appendChild(el);
    }
    jsPsych.getDisplayElement().replaceChildren(box);
  }

  function setStatus(state, text) {
    const el = document.getElementById("study-status");
    el.dataset.state = state;
    el.textContent = text;
  }

  /* The end: download the data, and send it to the server when served over http(s). */
  async function finish() {
    const data = jsPsych.data.get();
    const name = `study-${study.study_id}-${participant}.json`;
    showText("study-end", [["h1", "Thank you!"], ["p", "You have finished the study."],
      ["p", "Saving your answers…", "study-status"]]);
    data.localSave("json", name);
    if (window.location.protocol !== "http:" && window.location.protocol !== "https:") {
      setStatus("local", `Your answers were downloaded as ${name}: please send this file to the researchers.`);
      return;
    }
    try {
      const reply = await fetch("responses", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: data.json(),
        cache: "no-store", credentials: "same-origin",
      });
      if (!reply.ok) {
        throw new Error(`the server answered ${reply.status}`);
      }
      await reply.json();
      setStatus("saved", "Your answers were saved. You can close this page now.");
    } catch (error) {
      setStatus("failed", `Your answers could not be sent (${error.message}). They were downloaded as ` +
        `${name}: please send this file to the researchers.`);
    }
  }

  jsPsych.run(timeline()).then(() => {
    if (declined) {
      showText("study-end", [["h1", "Thank you"],
        ["p", "You chose not to take part. Nothing was recorded; you can close this page now."]]);
    } else {
      finish();
    }
  });
})();
