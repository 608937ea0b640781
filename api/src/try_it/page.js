// The try-it page: Connect (mint a dev token, add the connector, ask for the consent link, go
// there), then, back from the consent screen (?status=success|error), watch the connector's
// metadata, the local mailbox and the attempt's events, every second.
//
// Everything shown goes through textContent: nothing from the api or the mailbox is ever parsed
// as HTML.
"use strict";

(() => {
  const STORAGE_KEY = "gcal-try-it";
  const SUBACCOUNT_ID = /^[0-9a-f]{24}$/;
  const POLL_MS = 1000;
  // Dev tokens live 30 minutes; mint a new one well before.
  const TOKEN_REFRESH_MS = 20 * 60 * 1000;

  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function randomSubaccountId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // One JSON call to this api: {status, headers, json}; throws only when nothing answered.
  async function call(method, path, { token, body } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      throw new Error(`${method} ${path}: the api did not answer (${error.message})`);
    }
    let json = null;
    try {
      json = await response.json();
    } catch {
      // not JSON: reported through the status below
    }
    return { status: response.status, headers: response.headers, json };
  }

  function failure(what, reply) {
    const message = reply.json && reply.json.message ? reply.json.message : `HTTP ${reply.status}`;
    const code = reply.json && reply.json.error ? ` (${reply.json.error.code})` : "";
    return new Error(`${what} failed: ${message}${code}`);
  }

  async function mintToken(subaccountId) {
    const reply = await call("POST", "/dev/token", { body: { subaccountId } });
    if (reply.status !== 200) throw failure("Minting a dev token", reply);
    return reply.json.data.token;
  }

  function saved() {
    try {
      return JSON.parse(sessionStorage.getItem(STORAGE_KEY)) || {};
    } catch {
      return {};
    }
  }

  // --- before the consent screen ---------------------------------------------------------------

  function setStatus(text, className) {
    const status = $("status");
    status.textContent = text;
    status.className = className || "";
  }

  async function connect(event) {
    event.preventDefault();
    const subaccountId = $("subaccount").value.trim().toLowerCase();
    const userEmail = $("email").value.trim();
    const sendEmail = $("send-email").checked;
    if (!SUBACCOUNT_ID.test(subaccountId)) {
      setStatus("The subaccount id must be 24 hex characters.", "error");
      $("subaccount").focus();
      return;
    }
    if (!userEmail.includes("@")) {
      setStatus("Enter the user's email address.", "error");
      $("email").focus();
      return;
    }
    $("connect").disabled = true;
    try {
      setStatus("Minting a dev token…");
      const token = await mintToken(subaccountId);
      setStatus("Adding the google-calendar connector…");
      const added = await call("POST", `/api/connectors/${subaccountId}`, {
        token,
        body: { connectorId: "google-calendar" },
      });
      // 409: the subaccount already has it, which is just as good.
      if (added.status !== 201 && added.status !== 409) throw failure("Adding the connector", added);
      setStatus("Asking for the consent link…");
      const started = await call("POST", `/api/connectors/${subaccountId}/handlegooglecalendar`, {
        token,
        body: { userEmail, sendEmail },
      });
      if (started.status !== 200) throw failure("Starting the connection", started);
      sessionStorage.setItem(
        STORAGE_KEY,
        JSON.stringify({
          subaccountId,
          userEmail,
          sendEmail,
          emailSent: started.json.data.emailSent,
          correlationId: started.headers.get("x-correlation-id"),
          connectAnsweredAt: new Date().toISOString(),
        }),
      );
      setStatus(`${started.json.message}. Opening the consent screen…`, "success");
      window.location.assign(started.json.data.authUrl);
    } catch (error) {
      setStatus(error.message, "error");
      $("connect").disabled = false;
    }
  }

  function showForm() {
    const previous = saved();
    $("subaccount").value = previous.subaccountId || randomSubaccountId();
    if (previous.userEmail) $("email").value = previous.userEmail;
    $("new-subaccount").addEventListener("click", () => {
      $("subaccount").value = randomSubaccountId();
    });
    $("connect-form").addEventListener("submit", connect);
  }

  // --- after the consent screen ----------------------------------------------------------------

  // Pretty JSON, one span per line; lines with "isConnected" are highlighted.
  function renderJson(pre, value) {
    const text = JSON.stringify(value, null, 2);
    if (pre.dataset.shown === text) return;
    pre.dataset.shown = text;
    pre.replaceChildren(
      ...text.split("\n").map((line) => {
        const span = element("span", `${line}\n`);
        if (line.includes('"isConnected"')) {
          span.className = /true,?$/.test(line) ? "hl-true" : "hl-false";
        }
        return span;
      }),
    );
  }

  function watch(params) {
    const state = saved();
    const status = params.get("status");
    const subaccountId = (params.get("subaccountId") || state.subaccountId || "").toLowerCase();
    const userEmail = state.userEmail || "";
    const correlationId = state.correlationId || "";
    $("start").hidden = true;
    $("watch").hidden = false;
    $("start-over").addEventListener("click", () => {
      sessionStorage.removeItem(STORAGE_KEY);
      window.location.assign("/");
    });

    const outcome = $("outcome");
    if (status === "success") {
      outcome.textContent = `Consent given: Google account ${params.get("googleEmail") || "?"} connected to subaccount ${subaccountId}.`;
      outcome.className = "success";
    } else {
      outcome.textContent = `The connection did not succeed: ${params.get("reason") || status || "unknown reason"}.`;
      outcome.className = "error";
    }
    $("ids").textContent = `subaccount ${subaccountId || "?"} · user ${userEmail || "?"} · correlation id ${correlationId || "?"}`;
    if (!SUBACCOUNT_ID.test(subaccountId)) {
      $("metadata-error").textContent =
        "No subaccount to watch: this tab did not start the connection. Start over.";
      return;
    }

    let token = null;
    let tokenAt = 0;
    async function currentToken() {
      if (!token || Date.now() - tokenAt > TOKEN_REFRESH_MS) {
        token = await mintToken(subaccountId);
        tokenAt = Date.now();
      }
      return token;
    }

    async function refreshMetadata() {
      const reply = await call("GET", `/api/connectors/${subaccountId}/google-calendar`, {
        token: await currentToken(),
      });
      if (reply.status !== 200) throw failure("Reading the connector", reply);
      const connector = reply.json.data;
      renderJson($("metadata"), connector);
      const connected = Boolean(connector.metadata && connector.metadata.isConnected === true);
      const badge = $("connected");
      badge.textContent = connected ? "isConnected: true" : "isConnected: not yet";
      badge.className = connected ? "badge ok" : "badge";
    }

    async function refreshInbox() {
      if (!userEmail) {
        $("inbox-hint").textContent = "No user email known in this tab.";
        return;
      }
      const reply = await call("GET", `/dev/inbox?to=${encodeURIComponent(userEmail)}`);
      if (reply.status !== 200) throw failure("Reading the local mailbox", reply);
      const messages = reply.json.data.messages;
      $("inbox-hint").textContent =
        `${messages.length} message(s) to ${userEmail} in the local SMTP sink (${reply.json.data.sink})` +
        (state.sendEmail === false ? "; Send email was not ticked, so none is expected." : ".");
      const key = messages.map((m) => m.id).join(",");
      const inbox = $("inbox");
      if (inbox.dataset.shown === key) return;
      inbox.dataset.shown = key;
      inbox.replaceChildren(
        ...messages.map((message) => {
          const article = element("article");
          article.append(
            element("h4", message.subject || "(no subject)"),
            element("span", `to ${(message.to || []).join(", ")} · from ${message.from} · ${message.receivedAt}`, "meta"),
            element("pre", message.text || "(no text part)"),
          );
          return article;
        }),
      );
    }

    async function refreshEvents() {
      if (!correlationId) {
        $("events-hint").textContent = "No correlation id known in this tab.";
        return;
      }
      const reply = await call("GET", `/dev/events?correlationId=${encodeURIComponent(correlationId)}`);
      if (reply.status !== 200) throw failure("Reading the event trail", reply);
      const data = reply.json.data;
      $("events-hint").textContent =
        `Correlation id ${correlationId}: stream ${data.stream}, ${data.scanned} message(s) scanned` +
        (data.complete ? "." : " (stopped early; newer events may be missing).");
      const key = data.events.map((e) => e.streamSequence).join(",");
      const list = $("events");
      if (list.dataset.shown === key) return;
      list.dataset.shown = key;
      const items = [];
      if (state.connectAnsweredAt) {
        // A request/reply over core NATS: the oauth-worker answers it, nothing stores it.
        const item = element("li");
        item.append(
          element("span", "connect-requested", "event-type"),
          element("span", `answered ${state.connectAnsweredAt} · NATS request ${data.connectRequestSubject} (request/reply, answered with the link; not kept in the stream)`, "meta"),
        );
        items.push(item);
      }
      data.events.forEach((event, index) => {
        const item = element("li");
        item.dataset.type = event.type;
        // Payloads fold away (an auth link is long); the newest one is shown open.
        const payload = element("details");
        payload.open = index === data.events.length - 1;
        payload.append(element("summary", "payload"), element("pre", JSON.stringify(event.payload, null, 2)));
        item.append(
          element("span", event.type, "event-type"),
          element("span", `${event.time} · ${event.subject} · stream sequence ${event.streamSequence}`, "meta"),
          payload,
        );
        items.push(item);
      });
      list.replaceChildren(...items);
    }

    // Each panel refreshes on its own, so one failing (say the mailbox is down) leaves the others
    // live; its error is shown until it recovers.
    function poll(refresh, errorId) {
      const run = async () => {
        try {
          await refresh();
          $(errorId).textContent = "";
        } catch (error) {
          $(errorId).textContent = error.message;
        }
        setTimeout(run, POLL_MS);
      };
      run();
    }
    poll(refreshMetadata, "metadata-error");
    poll(refreshInbox, "inbox-error");
    poll(refreshEvents, "events-error");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const params = new URLSearchParams(window.location.search);
    if (params.has("status")) {
      watch(params);
    } else {
      showForm();
    }
  });
})();
