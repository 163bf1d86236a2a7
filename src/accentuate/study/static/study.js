/* The participant page of an accentuate study (written by accentuate.study.page.write_page).

   Reads the study from the JSON in #study-data and runs it with jsPsych 8: preload the images,
   consent, instructions, every trial in an order of the participant's own (seeded by the study
   and participant ids), the end. Every trial row of the data has trial_id, condition, feature,
   feature_kind, catch, position, chosen (0 left, 1 right), rt (ms) and response_source
   ("keyboard" or "mouse"); every row has study_id, participant, submission and, from Prolific,
   prolific_pid, prolific_study_id and prolific_session_id. The page does not know the answers:
   the analysis scores the trials from trials.json.

   At the end, over http(s), the data is sent to `responses` and kept in the browser (localStorage)
   until the server confirms it: a send that gets no answer, or a 5xx, 408 or 429, is tried again
   after a pause that doubles (1 s to 30 s); after three failed tries a download is offered too; a
   reload while data is kept offers to send it. Every row carries this visit's `submission` id, so
   the server saves a submission once however often it comes. A refusal (another 4xx: a host
   without the server) downloads the data at once, and the browser keeps it no longer. Opened
   from file://, the page downloads the data. With Prolific, the server's answer carries the
   completion code and the page then goes to Prolific's completion URL. */
"use strict";

(function () {
  const study = JSON.parse(document.getElementById("study-data").textContent);
  const ID = /^[A-Za-z0-9_-]{1,64}$/;
  const QUESTION = "On which of these two photos is the feature stronger?";
  const SERVED = window.location.protocol === "http:" || window.location.protocol === "https:";
  /* The localStorage keys of the data the server has not confirmed: this, then the submission id. */
  const STORE = `accentuate-study:${study.study_id}:`;
  const FIRST_PAUSE = 1000;  // ms before the first new try; it doubles, up to LONGEST_PAUSE
  const LONGEST_PAUSE = 30000;
  const REPLY_WAIT = 30000;  // ms a try waits for the server's answer
  const OFFER_DOWNLOAD = 3;  // failed tries after which the download is offered

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
    return randomHex(8);
  }

  function randomHex(n) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /* Prolific's URL parameters, recorded with the data when they are valid ids. */
  function prolificFields() {
    const params = new URLSearchParams(window.location.search);
    const out = {};
    for (const [name, key] of [["PROLIFIC_PID", "prolific_pid"], ["STUDY_ID", "prolific_study_id"],
      ["SESSION_ID", "prolific_session_id"]]) {
      const value = params.get(name);
      if (value !== null && ID.test(value)) {
        out[key] = value;
      }
    }
    return out;
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
  const submission = randomHex(16);
  const jsPsych = initJsPsych({ show_progress_bar: true, message_progress_bar: "Progress" });
  jsPsych.data.addProperties(Object.assign({ study_id: study.study_id, participant: participant,
    submission: submission }, prolificFields()));
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

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) {
      el.className = className;
    }
    if (text !== undefined) {
      el.textContent = text;
    }
    return el;
  }

  function button(label, id) {
    const el = element("button", "jspsych-btn", label);
    el.type = "button";
    el.id = id;
    return el;
  }

  function showText(className, paragraphs) {
    const box = element("div", `study-text ${className}`);
    for (const [tag, text, id] of paragraphs) {
      const el = element(tag, "", text);
      if (id) {
        el.id = id;
      }
      box.appendChild(el);
    }
    jsPsych.getDisplayElement().replaceChildren(box);
    return box;
  }

  /* -- keeping the data until the server has it ------------------------------------------------ */
  function storage() {
    try {
      return window.localStorage;
    } catch (error) {
      return null;  // storage turned off
    }
  }

  /* The data this browser keeps for this study, oldest first: {key, file, body, finished}. */
  function pending() {
    const store = storage();
    const out = [];
    try {
      for (let i = 0; store && i < store.length; i++) {
        const key = store.key(i);
        if (key === null || !key.startsWith(STORE)) {
          continue;
        }
        let item = null;
        try {
          item = JSON.parse(store.getItem(key));
        } catch (error) {
          item = null;  // not an entry of this page
        }
        if (item && typeof item.body === "string" && typeof item.file === "string") {
          out.push(Object.assign(item, { key: key }));
        }
      }
    } catch (error) {
      return out;
    }
    return out.sort((a, b) => (a.finished || 0) - (b.finished || 0));
  }

  function keep(item) {
    const store = storage();
    try {
      store.setItem(item.key, JSON.stringify({ file: item.file, body: item.body, finished: item.finished }));
      return true;
    } catch (error) {
      return false;  // no storage, or full
    }
  }

  function forget(item) {
    const store = storage();
    try {
      store.removeItem(item.key);
    } catch (error) {
      /* nothing kept */
    }
  }

  function download(file, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    const link = element("a");
    link.href = url;
    link.download = file;
    link.hidden = true;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  /* One try: {status, answer}; status 0 when no answer came (no connection, or none in time). */
  async function post(body) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REPLY_WAIT);
    try {
      const reply = await fetch("responses", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: body,
        cache: "no-store", credentials: "same-origin", signal: abort.signal,
      });
      let answer = null;
      try {
        answer = await reply.json();
      } catch (error) {
        answer = null;
      }
      return { status: reply.status, answer: answer };
    } catch (error) {
      return { status: 0, answer: null };
    } finally {
      clearTimeout(timer);
    }
  }

  function temporary(status) {
    return status === 0 || status === 408 || status === 429 || status >= 500;
  }

  /* Send `item` until the server confirms it, reporting to `show(state, detail)`. Resolves with
     the server's answer ({saved, completion_code?}), or null when the server refused the data. */
  function deliver(item, show) {
    return new Promise((resolve) => {
      let failures = 0;
      const attempt = async () => {
        show("sending", { failures: failures });
        const result = await post(item.body);
        const answer = result.answer;
        if (result.status >= 200 && result.status < 300 && answer && typeof answer.saved === "string") {
          forget(item);
          show("saved", answer);
          resolve(answer);
          return;
        }
        const why = result.status === 0 ? "no connection to the server" : `the server answered ${result.status}`;
        if (!temporary(result.status)) {  // the server will not take it: downloaded, then not kept
          show("refused", { why: why, error: answer && typeof answer.error === "string" ? answer.error : "" });
          forget(item);
          resolve(null);
          return;
        }
        failures += 1;
        const pause = Math.min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (failures - 1)) * (0.75 + 0.5 * Math.random());
        await new Promise((done) => {
          const timer = setTimeout(done, pause);
          show("waiting", { failures: failures, why: why, seconds: Math.max(1, Math.round(pause / 1000)),
            now: () => { clearTimeout(timer); done(); } });
        });
        attempt();
      };
      attempt();
    });
  }

  /* The status line and the two buttons ("Send now" during a pause, the download after
     OFFER_DOWNLOAD failed tries) under `box`; returns the `show` function for deliver. */
  function statusPanel(box, current, kept) {
    const status = element("p", "", "");
    status.id = "study-status";
    const actions = element("div", "study-actions");
    const sendNow = button("Send now", "study-send");
    const save = button("Download your answers", "study-download");
    sendNow.hidden = true;
    save.hidden = true;
    actions.append(sendNow, save);
    box.append(status, actions);
    let now = null;
    sendNow.addEventListener("click", () => now && now());
    save.addEventListener("click", () => download(current().file, current().body));
    return (state, detail) => {
      status.dataset.state = state;
      sendNow.hidden = state !== "waiting";
      if (state === "sending") {
        status.textContent = detail.failures ? "Sending your answers again…" : "Saving your answers…";
      } else if (state === "waiting") {
        now = detail.now;
        const where = kept() ? "They are kept in this browser and will be" : "They will be";
        status.textContent = `Your answers could not be sent yet (${detail.why}). ${where} sent again in ` +
          `${detail.seconds} s: please keep this page open.`;
        if (detail.failures >= OFFER_DOWNLOAD) {
          save.hidden = false;
          status.textContent += " If this goes on, download your answers and send the file to the researchers.";
        }
      } else if (state === "saved") {
        save.hidden = true;
        status.textContent = "Your answers were saved. " + (detail.completion_code ?
          "Taking you back to Prolific…" : "You can close this page now.");
      } else if (state === "refused") {
        const item = current();
        download(item.file, item.body);
        save.hidden = false;
        status.textContent = `The server did not take your answers (${detail.why}` +
          `${detail.error ? ": " + detail.error : ""}). They were downloaded as ${item.file}: please send ` +
          "this file to the researchers.";
      }
    };
  }

  /* After the server's confirmation: on to Prolific when the server gave a completion code. */
  function complete(answer) {
    if (answer && typeof answer.completion_code === "string" && ID.test(answer.completion_code)) {
      setTimeout(() => window.location.assign(study.prolific_url + encodeURIComponent(answer.completion_code)), 1000);
    }
  }

  /* The end: over http(s), keep the data and send it until the server confirms it; from file://,
     download it. */
  function finish() {
    const item = {
      key: STORE + submission, file: `study-${study.study_id}-${participant}.json`,
      body: jsPsych.data.get().json(), finished: Date.now(),
    };
    const box = showText("study-end", [["h1", "Thank you!"], ["p", "You have finished the study."]]);
    if (!SERVED) {
      download(item.file, item.body);
      const status = element("p", "", `Your answers were downloaded as ${item.file}: please send this file to ` +
        "the researchers.");
      status.id = "study-status";
      status.dataset.state = "local";
      box.appendChild(status);
      return;
    }
    const kept = keep(item);
    deliver(item, statusPanel(box, () => item, () => kept)).then(complete);
  }

  /* A reload after a failed send: offer to send what this browser kept, or to start the study. */
  function offerPending(items) {
    const box = element("div", "study-text study-pending");
    const when = new Date(items[items.length - 1].finished || Date.now()).toLocaleString();
    box.append(element("h1", "", "Your answers have not been sent yet"),
      element("p", "", `This browser keeps the answers of ${items.length === 1 ? "a visit" : items.length +
        " visits"} to this study (the last finished ${when}) that did not reach the researchers.`));
    const actions = element("div", "study-actions");
    const send = button("Send them now", "study-resend");
    const start = button("Start the study", "study-start");
    actions.append(send, start);
    box.appendChild(actions);
    let current = items[0];
    const show = statusPanel(box, () => current, () => true);
    const page = element("div", "study-page");
    page.appendChild(box);
    document.body.appendChild(page);
    start.addEventListener("click", () => {
      page.remove();
      run();
    });
    send.addEventListener("click", async () => {
      send.disabled = true;
      let last = null;
      for (const item of items) {
        current = item;
        last = (await deliver(item, show)) || last;
      }
      complete(last);
    });
  }

  function run() {
    jsPsych.run(timeline()).then(() => {
      if (!declined) {
        finish();
      } else if (study.no_consent_code) {
        showText("study-end", [["h1", "Thank you"], ["p", "You chose not to take part. Nothing was recorded; " +
          "taking you back to Prolific…"]]);
        setTimeout(() => window.location.assign(study.prolific_url + encodeURIComponent(study.no_consent_code)),
          1000);
      } else {
        showText("study-end", [["h1", "Thank you"],
          ["p", "You chose not to take part. Nothing was recorded; you can close this page now."]]);
      }
    });
  }

  const waiting = SERVED ? pending() : [];
  if (waiting.length) {
    offerPending(waiting);
  } else {
    run();
  }
})();
