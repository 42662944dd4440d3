// tradestream dashboard: plain JavaScript, no dependencies, no build step.
//
// Data: the WebSocket /ws?batch=1&subscribe=... (the conflated topics: the indexes, the market
// gate and, once the page knows them, the prices of the watched codes, subscribed with the
// connection), the token in the first message, the lossless topics (alert, signal:*, news)
// subscribed by message with `since` so that a reconnect misses nothing, and the REST reads
// with the same token once the socket has accepted it (slots, status, alerts, news): the
// watched codes are the trade registrations of GET /api/slots. Protocol: docs/protocol.md.
"use strict";

(() => {
  // -- settings -------------------------------------------------------------------------------
  const CONFIG = readConfig();
  const TOKEN_KEY = "tradestream.token";
  const TOKEN_DEV_KEY = "tradestream.token.dev"; // "1": the stored token came from the page
  const RELOAD_KEY = "tradestream.reloaded-at";
  const CONFLATED = ["market:kospi", "market:kosdaq", "market-gate"];
  const LOSSLESS = ["alert", "signal:vcp", "signal:daytrading", "news"];
  const RESERVED = CONFLATED.length + LOSSLESS.length + 1; // + the selected order book
  const TRADE_TRS = new Set(["H0STCNT0", "H0NXCNT0", "H0UNCNT0"]);
  const BOOK_TRS = new Set(["H0STASP0", "H0NXASP0", "H0UNASP0"]);
  const PRIORITIES = ["holding", "pick", "scanner", "demand"];
  const SPARK_WINDOW_MS = 5 * 60 * 1000; // the sparkline: the last five minutes ...
  const SPARK_STEP_MS = 1000; // ... at most one point a second
  const SPARK_W = 90;
  const SPARK_H = 22;
  const FEED_CAP = 50;
  const GAP_CAP = 20;
  const POLL_MS = 4000; // operations panel
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 5000;
  const BACKOFF_BUSY_MS = 5000; // after "try again later" closes
  const SILENCE_MS = 75000; // the server pings every 30 s: this long without a frame is a dead socket
  const BUSY_CLOSES = new Set([1013, 4008, 4409, 4429]);
  const AUTH_CLOSES = new Set([4401, 4419]);

  // -- state ----------------------------------------------------------------------------------
  const st = {
    token: null,
    tokenIsDev: false,
    ws: null,
    live: false,
    attempt: 0,
    retryTimer: 0,
    lastFrameAt: 0,
    lastClose: "",
    codes: [], // watched codes, in listing order
    names: new Map(),
    books: new Set(), // codes with an order-book registration
    rows: new Map(), // code -> row state
    subscribedPrices: new Set(),
    selected: null,
    bookTopic: null,
    lastSeen: new Map(), // lossless topic -> {offset, epoch}
    sentSince: new Map(), // lossless topic -> whether the last subscribe carried `since`
    dirty: new Set(),
    frameQueued: false,
    sort: { key: "code", dir: 1 },
    seen: { alert: new Set(), news: new Set() },
    polling: false,
    pollTimer: 0,
    capNote: "",
  };

  const $ = (sel) => document.querySelector(sel);
  const el = {
    conn: $("#conn"),
    connText: $("#conn-text"),
    user: $("#user"),
    login: $("#login"),
    loginForm: $("#login-form"),
    tokenInput: $("#token-input"),
    loginError: $("#login-error"),
    loginDev: $("#login-dev"),
    tbody: $("#prices tbody"),
    codesCount: $("#codes-count"),
    codesNote: $("#codes-note"),
    bookTitle: $("#book-title"),
    bookNote: $("#book-note"),
    bookBody: $("#book tbody"),
    bookAskTotal: $("#book-ask-total"),
    bookBidTotal: $("#book-bid-total"),
    bookTime: $("#book-time"),
    alerts: $("#alerts"),
    signals: $("#signals"),
    news: $("#news"),
    gaps: $("#gaps"),
    opsSlots: $("#ops-slots"),
    opsUpstream: $("#ops-upstream tbody"),
    opsCounters: $("#ops-counters"),
    opsAge: $("#ops-age"),
    gate: $("#gate"),
  };

  // -- formatting -----------------------------------------------------------------------------
  const intFmt = new Intl.NumberFormat("ko-KR");
  const idxFmt = new Intl.NumberFormat("ko-KR", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const timeFmt = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Seoul", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  const fmtInt = (n) => (typeof n === "number" && isFinite(n) ? intFmt.format(n) : "–");
  const signed = (n, text) => (n > 0 ? "+" : "") + text;
  const fmtPct = (n) => (typeof n === "number" && isFinite(n) ? signed(n, n.toFixed(2)) + "%" : "–");
  const dirClass = (n) => (n > 0 ? "up" : n < 0 ? "down" : "flat");
  const arrow = (n) => (n > 0 ? "▲" : n < 0 ? "▼" : "–");
  function epochMs(iso) {
    const t = Date.parse(iso);
    return isFinite(t) ? t : Date.now();
  }
  function kst(iso) {
    const t = Date.parse(iso);
    return isFinite(t) ? timeFmt.format(t) : "";
  }
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("data-")) node.setAttribute(k, String(v));
        else node[k] = v;
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const nameOf = (code) => st.names.get(code) || "";
  const label = (code) => (nameOf(code) ? `${nameOf(code)} ${code}` : code || "");

  function readConfig() {
    const node = document.getElementById("config");
    try {
      return Object.assign(
        { devToken: null, maxSubscriptions: 200, ratePerS: 20, rateBurst: 40 },
        JSON.parse(node ? node.textContent : "{}"),
      );
    } catch (_) {
      return { devToken: null, maxSubscriptions: 200, ratePerS: 20, rateBurst: 40 };
    }
  }

  function jwtClaims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
      );
      return JSON.parse(json);
    } catch (_) {
      return null;
    }
  }

  // -- connection state -----------------------------------------------------------------------
  function setConn(state, text, detail) {
    el.conn.dataset.state = state;
    el.connText.textContent = text;
    el.conn.title = detail || text;
  }

  // -- the token ------------------------------------------------------------------------------
  function chooseToken() {
    let stored = null;
    let storedDev = false;
    try {
      stored = localStorage.getItem(TOKEN_KEY);
      storedDev = localStorage.getItem(TOKEN_DEV_KEY) === "1";
    } catch (_) {
      /* storage disabled: the token lives as long as the page */
    }
    if (CONFIG.devToken && (!stored || storedDev)) {
      saveToken(CONFIG.devToken, true);
    } else if (stored) {
      st.token = stored;
      st.tokenIsDev = storedDev;
    }
    showUser();
  }

  function saveToken(token, isDev) {
    st.token = token;
    st.tokenIsDev = isDev;
    try {
      localStorage.setItem(TOKEN_KEY, token);
      localStorage.setItem(TOKEN_DEV_KEY, isDev ? "1" : "0");
    } catch (_) {
      /* not kept */
    }
    showUser();
  }

  function forgetToken() {
    st.token = null;
    st.tokenIsDev = false;
    try {
      localStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_DEV_KEY);
    } catch (_) {
      /* nothing kept */
    }
    showUser();
  }

  function showUser() {
    const claims = st.token ? jwtClaims(st.token) : null;
    if (!claims) {
      el.user.textContent = "";
      return;
    }
    const exp = typeof claims.exp === "number" ? ` · until ${kst(new Date(claims.exp * 1000).toISOString())} KST` : "";
    el.user.textContent = `${claims.sub || "?"} (${claims.role || "user"})`;
    el.user.title = `user ${claims.sub}, role ${claims.role || "user"}${exp}${st.tokenIsDev ? " · dev token" : ""}`;
  }

  function showLogin(error) {
    el.login.hidden = false;
    el.loginDev.hidden = !CONFIG.devToken;
    el.tokenInput.value = st.token || CONFIG.devToken || "";
    el.loginError.hidden = !error;
    el.loginError.textContent = error || "";
    $("#login-cancel").hidden = !st.token || !!error;
    if (!st.live) setConn("login", error ? "sign-in needed" : "not connected");
    el.tokenInput.focus();
  }

  function hideLogin() {
    el.login.hidden = true;
  }

  el.loginForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = el.tokenInput.value.trim();
    if (!/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) {
      el.loginError.hidden = false;
      el.loginError.textContent = "That is not a JWT (three base64url parts joined by dots).";
      return;
    }
    saveToken(token, token === CONFIG.devToken);
    hideLogin();
    restart();
  });
  $("#login-forget").addEventListener("click", () => {
    forgetToken();
    dropSocket();
    showLogin("Token forgotten. Paste one to connect.");
  });
  $("#login-cancel").addEventListener("click", hideLogin);
  $("#token-button").addEventListener("click", () => showLogin());

  // -- REST -----------------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const resp = await fetch(path, {
      headers: { Authorization: `Bearer ${st.token}` },
      cache: "no-store",
    });
    if (!resp.ok) {
      let message = `HTTP ${resp.status}`;
      try {
        message = (await resp.json()).error || message;
      } catch (_) {
        /* not JSON */
      }
      throw new HttpError(resp.status, message);
    }
    return resp.json();
  }

  // -- sending (under the server's rate limit) ------------------------------------------------
  // a little under the server's token bucket: a burst of subscriptions is never refused
  const bucket = {
    rate: Math.max(1, (CONFIG.ratePerS || 20) * 0.9),
    burst: Math.max(1, Math.floor((CONFIG.rateBurst || 40) * 0.9)),
    tokens: 0,
    at: 0,
    queue: [],
    timer: 0,
  };
  bucket.tokens = bucket.burst;
  bucket.at = performance.now();

  function send(msg) {
    bucket.queue.push(JSON.stringify(msg));
    drain();
  }

  function drain() {
    if (bucket.timer) return;
    const now = performance.now();
    bucket.tokens = Math.min(bucket.burst, bucket.tokens + ((now - bucket.at) / 1000) * bucket.rate);
    bucket.at = now;
    while (bucket.queue.length && bucket.tokens >= 1) {
      if (!st.ws || st.ws.readyState !== WebSocket.OPEN) {
        bucket.queue.length = 0;
        return;
      }
      st.ws.send(bucket.queue.shift());
      bucket.tokens -= 1;
    }
    if (bucket.queue.length) {
      bucket.timer = setTimeout(() => {
        bucket.timer = 0;
        drain();
      }, Math.ceil(((1 - bucket.tokens) / bucket.rate) * 1000));
    }
  }

  // -- the socket -----------------------------------------------------------------------------
  function priceCapacity() {
    return Math.max(0, (CONFIG.maxSubscriptions || 200) - RESERVED);
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const cap = priceCapacity();
    const prices = st.codes.slice(0, cap).map((c) => "price:" + c);
    const topics = [...CONFLATED, ...prices].join(",");
    return `${scheme}//${location.host}/ws?batch=1&subscribe=${encodeURIComponent(topics)}`;
  }

  function connect() {
    clearTimeout(st.retryTimer);
    st.retryTimer = 0;
    if (!st.token) {
      showLogin();
      return;
    }
    if (st.attempt) setConn("reconnecting", `disconnected · reconnecting (attempt ${st.attempt})`, st.lastClose);
    else setConn("connecting", "connecting");
    // The token is tried on the socket first (a refusal closes it with 4401, quietly); the
    // REST reads follow once it is accepted. Codes already known ride on the connection.
    const ws = new WebSocket(socketUrl());
    st.ws = ws;
    st.live = false;
    st.subscribedPrices = new Set(st.codes.slice(0, priceCapacity()));
    ws.onopen = () => {
      if (ws !== st.ws) return;
      st.lastFrameAt = Date.now();
      // the token travels in the first message, not in the URL (kept out of logs)
      ws.send(JSON.stringify({ type: "auth", token: st.token }));
    };
    ws.onmessage = (ev) => {
      if (ws !== st.ws) return;
      st.lastFrameAt = Date.now();
      const parsed = JSON.parse(ev.data);
      if (Array.isArray(parsed)) for (const m of parsed) handle(m);
      else handle(parsed);
    };
    ws.onclose = (ev) => {
      if (ws !== st.ws) return;
      onClosed(ev.code, ev.reason);
    };
  }

  function onClosed(code, reason) {
    st.ws = null;
    st.live = false;
    stopPolling();
    st.lastClose = `closed ${code}${reason ? ": " + reason : ""}`;
    if (AUTH_CLOSES.has(code)) {
      authFailed(reason || (code === 4419 ? "token expired" : "token refused"));
      return;
    }
    scheduleReconnect(BUSY_CLOSES.has(code));
  }

  function authFailed(reason) {
    st.live = false;
    // A dev token from an earlier page load, refused: the server was restarted with a new
    // made-up secret. This page's own dev token is the fix, or a reload for a fresh one.
    if (CONFIG.devToken && st.token !== CONFIG.devToken && (st.tokenIsDev || !st.token)) {
      saveToken(CONFIG.devToken, true);
      restart();
      return;
    }
    if (st.tokenIsDev && st.token === CONFIG.devToken) {
      let last = 0;
      try {
        last = Number(sessionStorage.getItem(RELOAD_KEY) || 0);
      } catch (_) {
        /* no session storage */
      }
      if (Date.now() - last > 30000) {
        try {
          sessionStorage.setItem(RELOAD_KEY, String(Date.now()));
        } catch (_) {
          /* reload anyway, once */
        }
        setConn("reconnecting", "reloading for a new dev token");
        location.reload();
        return;
      }
    }
    setConn("login", "sign-in needed", reason);
    showLogin(`The server refused the token: ${reason}`);
  }

  function scheduleReconnect(busy) {
    clearTimeout(st.retryTimer);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** st.attempt);
    const ceiling = busy ? Math.max(BACKOFF_BUSY_MS, base) : base;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // drawn from [d/2, d]
    st.attempt += 1;
    const secs = (delay / 1000).toFixed(1);
    setConn("reconnecting", `disconnected · reconnecting in ${secs}s (attempt ${st.attempt})`, st.lastClose);
    st.retryTimer = setTimeout(connect, delay);
  }

  function dropSocket() {
    const ws = st.ws;
    st.ws = null;
    st.live = false;
    stopPolling();
    clearTimeout(st.retryTimer);
    bucket.queue.length = 0;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close(1000, "bye");
      } catch (_) {
        /* already closing */
      }
    }
  }

  function restart() {
    dropSocket();
    st.attempt = 0;
    st.lastSeen.clear(); // another token may be another user: start the streams afresh
    connect();
  }

  // a socket that went silent (no frame, not even the server's ping): reconnect
  setInterval(() => {
    if (st.ws && st.ws.readyState === WebSocket.OPEN && Date.now() - st.lastFrameAt > SILENCE_MS) {
      dropSocket();
      st.lastClose = "no frame for 75 s";
      scheduleReconnect(false);
    }
  }, 5000);
  window.addEventListener("online", () => {
    if (!st.ws && st.token && st.retryTimer) connect();
  });

  // -- messages -------------------------------------------------------------------------------
  function handle(m) {
    switch (m.type) {
      case "connected":
        onConnected(m);
        break;
      case "subscribed":
        onSubscribed(m);
        break;
      case "price_update":
        onPrice(m.symbol, m.data);
        break;
      case "orderbook_update":
        if (m.symbol === st.selected) renderBook(m.data);
        break;
      case "index_update":
        renderIndex(m.index, m.data);
        break;
      case "market_gate_update":
        renderGate(m.data);
        break;
      case "alert":
        seen("alert", m);
        addAlert({ code: m.symbol, ...m.data }, true);
        break;
      case "signal_update":
        seen("signal:" + String(m.data.signal_type || "").toLowerCase(), m);
        addSignals(m.data, true);
        break;
      case "news":
        seen("news", m);
        addNews(m.data, true);
        break;
      case "feed_gap":
        addGap(m);
        break;
      case "ping":
        send({ type: "pong" });
        break;
      case "error":
        onError(m);
        break;
      default:
        break; // pong, unsubscribed, authenticated
    }
  }

  function seen(topic, m) {
    if (typeof m.offset !== "number" || !m.epoch) return;
    const last = st.lastSeen.get(topic);
    if (!last || last.epoch !== m.epoch || m.offset > last.offset) {
      st.lastSeen.set(topic, { offset: m.offset, epoch: m.epoch });
    }
  }

  function onConnected(m) {
    st.live = true;
    st.attempt = 0;
    hideLogin();
    setConn("live", "live", `connected as ${m.user_id} (client ${m.client_id})`);
    try {
      sessionStorage.removeItem(RELOAD_KEY);
    } catch (_) {
      /* fine */
    }
    // the lossless topics: from where this page left them, when the server gave offsets
    for (const topic of LOSSLESS) {
      const since = st.lastSeen.get(topic);
      st.sentSince.set(topic, !!since);
      send(since ? { type: "subscribe", topic, since } : { type: "subscribe", topic });
    }
    if (st.selected) subscribeBook(st.selected);
    startPolling();
  }

  function onSubscribed(m) {
    const topic = m.topic;
    if (!LOSSLESS.includes(topic)) return;
    const hadSince = st.sentSince.get(topic);
    if (m.recovered === true) {
      el.conn.dataset.recovery = "recovered";
      return; // the missed messages follow, and move lastSeen on
    }
    if (typeof m.offset === "number" && m.epoch) {
      st.lastSeen.set(topic, { offset: m.offset, epoch: m.epoch });
    }
    if (hadSince) el.conn.dataset.recovery = "reloaded"; // another epoch: the server restarted
    // first subscription, or history that no longer reaches back: read the state afresh
    if (topic === "alert") loadAlerts();
    if (topic === "news") loadNews();
  }

  function onError(m) {
    const topic = m.topic || "";
    if (topic.startsWith("price:")) {
      const row = st.rows.get(topic.slice(6));
      if (row) {
        row.tr.classList.add("failed");
        row.tr.title = `${m.code}: ${m.message}`;
      }
      st.subscribedPrices.delete(topic.slice(6));
    } else if (topic.startsWith("orderbook:")) {
      if (topic === st.bookTopic) {
        st.bookTopic = null;
        el.bookNote.hidden = false;
        el.bookNote.className = "note error";
        el.bookNote.textContent = `${m.code}: ${m.message}`;
      }
    } else if (m.code === "rate_limited") {
      st.lastClose = "rate limited by the server";
    }
  }

  // -- the codes ------------------------------------------------------------------------------
  function codesFromStatus(status) {
    // a gateway without the slot manager: the prices someone already watches
    if (st.codes.length) return;
    const codes = Object.keys(status.subscriptions || {})
      .filter((t) => /^price:[0-9A-Z]{6}$/.test(t))
      .map((t) => t.slice(6))
      .sort();
    setCodes(codes);
  }

  function applyListing(listing) {
    const codes = [];
    for (const s of listing.slots || []) {
      if (s.name) st.names.set(s.code, s.name);
      if (TRADE_TRS.has(s.tr_id)) codes.push(s.code);
      if (BOOK_TRS.has(s.tr_id)) st.books.add(s.code);
    }
    setCodes([...new Set(codes)].sort());
  }

  function setCodes(codes) {
    const cap = priceCapacity();
    let added = false;
    for (const code of codes) {
      if (st.codes.includes(code)) continue;
      st.codes.push(code);
      added = true;
    }
    const shown = st.codes.slice(0, cap);
    for (const code of shown) {
      if (!st.rows.has(code)) addRow(code);
      else refreshName(code);
      if (st.live && !st.subscribedPrices.has(code)) {
        st.subscribedPrices.add(code);
        send({ type: "subscribe", topic: "price:" + code });
      }
    }
    el.codesCount.textContent = `${shown.length}`;
    st.capNote =
      st.codes.length > cap
        ? `Showing ${cap} of ${st.codes.length} codes (at most ${CONFIG.maxSubscriptions} subscriptions per connection).`
        : "";
    el.codesNote.hidden = !st.capNote && st.codes.length > 0;
    el.codesNote.textContent = st.capNote || (st.codes.length ? "" : "No streamed codes yet.");
    if (added) resort(true);
    if (!st.selected && shown.length) {
      const first = shown.find((c) => st.books.has(c)) || shown[0];
      select(first, false);
    }
  }

  // -- the price table ------------------------------------------------------------------------
  const SVG_NS = "http://www.w3.org/2000/svg";

  function addRow(code) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("class", "flat");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
    const nm = h("span", { class: "nm", text: nameOf(code) || code });
    const name = h("td", { class: "name" }, nm, h("span", { class: "code", text: code }));
    const price = h("td", { class: "num price" });
    const change = h("td", { class: "num chg" });
    const volume = h("td", { class: "num vol" });
    const spark = h("td", { class: "spark" }, svg);
    const tr = h("tr", { "data-code": code, "data-updates": 0, class: "nodata", tabIndex: 0 }, name, price, change, volume, spark);
    tr.addEventListener("click", () => select(code, true));
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        select(code, true);
      }
    });
    const row = { code, tr, nm, price, change, volume, line, data: null, updates: 0, points: [], sparkDirty: false, flip: false };
    st.rows.set(code, row);
    el.tbody.append(tr);
    if (code === st.selected) tr.classList.add("selected");
  }

  function refreshName(code) {
    const row = st.rows.get(code);
    if (row && nameOf(code) && row.nm.textContent !== nameOf(code)) row.nm.textContent = nameOf(code);
  }

  function onPrice(code, data) {
    const row = st.rows.get(code);
    if (!row || !data) return;
    row.data = data;
    row.updates += 1;
    const now = Date.now();
    const pts = row.points;
    const last = pts[pts.length - 1];
    if (last && now - last[0] < SPARK_STEP_MS) last[1] = data.price;
    else pts.push([now, data.price]);
    while (pts.length && pts[0][0] < now - SPARK_WINDOW_MS) pts.shift();
    row.sparkDirty = true;
    st.dirty.add(code);
    if (!st.frameQueued) {
      st.frameQueued = true;
      requestAnimationFrame(renderRows);
    }
  }

  function renderRows() {
    st.frameQueued = false;
    for (const code of st.dirty) {
      const row = st.rows.get(code);
      if (!row || !row.data) continue;
      const d = row.data;
      const cls = dirClass(d.change);
      row.price.textContent = fmtInt(d.price);
      row.price.className = `num price ${cls}`;
      row.change.className = `num chg ${cls}`;
      row.change.textContent = `${arrow(d.change)} ${fmtPct(d.change_percent)}`;
      row.change.title = `${signed(d.change, fmtInt(d.change))} KRW against the previous close`;
      row.volume.textContent = fmtInt(d.volume);
      row.tr.classList.remove("nodata", "failed", row.flip ? "flash-a" : "flash-b");
      row.tr.classList.add(row.flip ? "flash-b" : "flash-a");
      row.flip = !row.flip;
      row.tr.dataset.updates = String(row.updates);
      row.tr.title = `${label(code)} · ${kst(d.timestamp)} KST · open ${fmtInt(d.open)} high ${fmtInt(d.high)} low ${fmtInt(d.low)}`;
    }
    st.dirty.clear();
  }

  function renderSparks() {
    const now = Date.now();
    for (const row of st.rows.values()) {
      if (!row.sparkDirty) continue;
      row.sparkDirty = false;
      const pts = row.points;
      if (!pts.length) continue;
      const t0 = Math.min(pts[0][0], now - 20000); // a fresh line is not stretched across
      const span = Math.max(1, now - t0);
      let lo = Infinity;
      let hi = -Infinity;
      for (const [, p] of pts) {
        lo = Math.min(lo, p);
        hi = Math.max(hi, p);
      }
      const range = hi - lo || 1;
      const coords = pts.map(([t, p]) => {
        const x = ((t - t0) / span) * (SPARK_W - 2) + 1;
        const y = hi === lo ? SPARK_H / 2 : SPARK_H - 2 - ((p - lo) / range) * (SPARK_H - 4);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      if (coords.length === 1) coords.unshift(`1,${coords[0].split(",")[1]}`);
      row.line.setAttribute("points", coords.join(" "));
      row.line.setAttribute("class", dirClass(pts[pts.length - 1][1] - pts[0][1]));
    }
  }
  setInterval(renderSparks, 1000);

  // sorting: click a header (the dynamic keys re-sort every two seconds)
  const SORT_KEYS = {
    code: (r) => r.code,
    name: (r) => nameOf(r.code) || r.code,
    price: (r) => (r.data ? r.data.price : -Infinity),
    change: (r) => (r.data ? r.data.change_percent : -Infinity),
    volume: (r) => (r.data ? r.data.volume : -Infinity),
  };
  for (const th of document.querySelectorAll("#prices th[data-sort]")) {
    th.tabIndex = 0;
    const pick = () => {
      const key = th.dataset.sort;
      // the same header again: the other direction; numbers start with the largest
      st.sort = st.sort.key === key ? { key, dir: -st.sort.dir } : { key, dir: key === "name" ? 1 : -1 };
      for (const other of document.querySelectorAll("#prices th[data-sort]")) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", st.sort.dir > 0 ? "ascending" : "descending");
      resort(true);
    };
    th.addEventListener("click", pick);
    th.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        pick();
      }
    });
  }

  function resort(force) {
    const { key, dir } = st.sort;
    if (!force && (key === "code" || key === "name")) return;
    const f = SORT_KEYS[key];
    const rows = [...st.rows.values()];
    rows.sort((a, b) => {
      const x = f(a);
      const y = f(b);
      const c = typeof x === "string" ? x.localeCompare(y, "ko") : x - y;
      return c * dir || a.code.localeCompare(b.code);
    });
    const current = [...el.tbody.children];
    if (rows.every((r, i) => current[i] === r.tr)) return;
    el.tbody.append(...rows.map((r) => r.tr));
  }
  setInterval(() => resort(false), 2000);

  // -- the order book -------------------------------------------------------------------------
  const LEVELS = 10;
  const bookRows = { asks: [], bids: [] };
  (function buildBook() {
    const make = (side) => {
      const bar = h("span", { class: "bar" });
      const size = h("span", { class: "v" });
      const price = h("td", { class: `num price-cell ${side === "ask" ? "ask-price" : "bid-price"}` });
      const sizeCell = h("td", { class: `num ${side}-size` }, bar, size);
      const blank = h("td", { class: "num" });
      const tr = side === "ask" ? h("tr", { class: "ask" }, sizeCell, price, blank) : h("tr", { class: "bid" }, blank, price, sizeCell);
      return { tr, bar, size, price };
    };
    for (let i = 0; i < LEVELS; i++) bookRows.asks.push(make("ask"));
    for (let i = 0; i < LEVELS; i++) bookRows.bids.push(make("bid"));
    bookRows.bids[0].tr.classList.add("spread");
    el.bookBody.append(...bookRows.asks.map((r) => r.tr), ...bookRows.bids.map((r) => r.tr));
  })();

  function clearBook() {
    for (const r of [...bookRows.asks, ...bookRows.bids]) {
      r.size.textContent = "";
      r.price.textContent = "";
      r.bar.style.width = "0";
    }
    el.bookAskTotal.textContent = "";
    el.bookBidTotal.textContent = "";
    el.bookTime.textContent = "";
  }

  function renderBook(d) {
    el.bookNote.hidden = true;
    const asks = (d.asks || []).slice(0, LEVELS);
    const bids = (d.bids || []).slice(0, LEVELS);
    let max = 1;
    for (const [, s] of [...asks, ...bids]) max = Math.max(max, s);
    // asks: the best (lowest) next to the spread, so from the top the highest first
    for (let i = 0; i < LEVELS; i++) {
      const a = asks[LEVELS - 1 - i];
      const r = bookRows.asks[i];
      r.price.textContent = a ? fmtInt(a[0]) : "";
      r.size.textContent = a ? fmtInt(a[1]) : "";
      r.bar.style.width = a ? `${((a[1] / max) * 100).toFixed(1)}%` : "0";
      const b = bids[i];
      const q = bookRows.bids[i];
      q.price.textContent = b ? fmtInt(b[0]) : "";
      q.size.textContent = b ? fmtInt(b[1]) : "";
      q.bar.style.width = b ? `${((b[1] / max) * 100).toFixed(1)}%` : "0";
    }
    el.bookAskTotal.textContent = `asks ${fmtInt(d.total_ask_size)}`;
    el.bookBidTotal.textContent = `bids ${fmtInt(d.total_bid_size)}`;
    el.bookTime.textContent = d.expected_price ? `expected ${fmtInt(d.expected_price)}` : kst(d.timestamp);
  }

  function subscribeBook(code) {
    st.bookTopic = "orderbook:" + code;
    send({ type: "subscribe", topic: st.bookTopic });
  }

  function select(code, user) {
    if (code === st.selected) return;
    if (st.bookTopic && st.live) send({ type: "unsubscribe", topic: st.bookTopic });
    st.bookTopic = null;
    const old = st.rows.get(st.selected);
    if (old) old.tr.classList.remove("selected");
    st.selected = code;
    const row = st.rows.get(code);
    if (row) row.tr.classList.add("selected");
    el.bookTitle.textContent = label(code);
    clearBook();
    el.bookNote.hidden = false;
    el.bookNote.className = "note";
    el.bookNote.textContent = st.books.has(code) ? "Waiting for the order book…" : "Asking for this code's order book…";
    if (st.live) subscribeBook(code);
    if (user && window.matchMedia("(max-width: 640px)").matches) {
      $(".book").scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  // -- indexes and the gate -------------------------------------------------------------------
  function renderIndex(index, d) {
    const node = $(`#idx-${index}`);
    if (!node || !d) return;
    const cls = dirClass(d.change);
    const value = node.querySelector(".value");
    const chg = node.querySelector(".chg");
    value.textContent = idxFmt.format(d.value);
    value.className = `value ${cls}`;
    chg.textContent = `${arrow(d.change)} ${fmtPct(d.change_percent)}`;
    chg.className = `chg ${cls}`;
    node.title = `${index.toUpperCase()} ${signed(d.change, idxFmt.format(d.change))} · advancers ${d.advancers}, decliners ${d.decliners} · ${kst(d.timestamp)} KST`;
  }

  function renderGate(d) {
    if (!d) return;
    el.gate.dataset.level = d.level || "none";
    el.gate.querySelector(".status").textContent = d.status || "–";
    const reasons = (d.reasons || []).join("; ") || "no threshold crossed";
    const breadth = typeof d.breadth === "number" ? `breadth ${d.breadth.toFixed(2)}` : "breadth –";
    el.gate.title = `market gate ${d.status} (${d.level}): ${reasons} · ${breadth} · since ${kst(d.timestamp)} KST`;
  }

  // -- feeds: newest first, capped ------------------------------------------------------------
  function insertByTime(list, li, ts, cap, animate) {
    li.dataset.ts = String(ts);
    if (animate) li.classList.add("new");
    let before = null;
    for (const child of list.children) {
      if (Number(child.dataset.ts) <= ts) {
        before = child;
        break;
      }
    }
    list.insertBefore(li, before);
    while (list.children.length > cap) list.lastElementChild.remove();
  }

  // keys of what the lists have shown (a REST read and the live stream overlap), bounded
  function firstTime(set, key) {
    if (set.has(key)) return false;
    set.add(key);
    if (set.size > 20 * FEED_CAP) {
      for (const old of set) {
        set.delete(old); // the oldest first: a Set keeps insertion order
        if (set.size <= 10 * FEED_CAP) break;
      }
    }
    return true;
  }

  function addAlert(a, animate) {
    if (!firstTime(st.seen.alert, `${a.code}|${a.direction}|${a.triggered_at}`)) return;
    const up = a.direction === "up";
    const li = h(
      "li",
      { class: "alert", "data-code": a.code, "data-direction": a.direction },
      h("span", { class: "time", text: kst(a.triggered_at) }),
      h("span", { class: up ? "up" : "down", text: `${up ? "▲" : "▼"} ${fmtPct(a.change_percent)} ` }),
      h("span", { class: "title", text: `${label(a.code)} at ${fmtInt(a.price)}` }),
      h("span", { class: "sub", text: a.message || "" }),
    );
    insertByTime(el.alerts, li, epochMs(a.triggered_at), FEED_CAP, animate);
  }

  function addSignals(d, animate) {
    const kind = String(d.signal_type || "").toLowerCase();
    const ts = epochMs(d.timestamp);
    const tag = kind === "daytrading" ? "DAY" : kind.toUpperCase();
    if (!d.signals || !d.signals.length) {
      const li = h(
        "li",
        { class: "signal empty-scan", "data-kind": kind },
        h("span", { class: "time", text: kst(d.timestamp) }),
        h("span", { class: `tag ${kind}`, text: tag }),
        h("span", { class: "muted", text: "scan found nothing" }),
      );
      insertByTime(el.signals, li, ts, FEED_CAP, animate);
      return;
    }
    // the first item (the best score) ends up on top
    for (const s of [...d.signals].reverse()) {
      const code = s.symbol || s.code || "";
      const score = typeof s.score === "number" ? `score ${s.score.toFixed(2)}` : "";
      const price = typeof s.price === "number" ? `at ${fmtInt(s.price)}` : "";
      const li = h(
        "li",
        { class: "signal", "data-kind": kind, "data-code": code },
        h("span", { class: "time", text: kst(d.timestamp) }),
        h("span", { class: `tag ${kind}`, text: tag }),
        h("span", { class: "title", text: [label(code) || "(no code)", price, score].filter(Boolean).join(" · ") }),
        h("span", { class: "sub", text: s.reason || s.signal || "" }),
      );
      insertByTime(el.signals, li, ts, FEED_CAP, animate);
    }
  }

  function addNews(n, animate) {
    const id = n.id || n.realkey || `${n.published_at}|${n.title}`;
    if (!firstTime(st.seen.news, id)) return;
    const tickers = (n.tickers || []).map((c) => nameOf(c) || c).join(", ");
    const li = h(
      "li",
      { class: "news-item", "data-id": id },
      h("span", { class: "time", text: kst(n.published_at) }),
      h("span", { class: "title", text: n.title || "" }),
      h("span", { class: "sub", text: [n.media, tickers].filter(Boolean).join(" · ") }),
    );
    insertByTime(el.news, li, epochMs(n.published_at), FEED_CAP, animate);
  }

  function addGap(g) {
    const secs = (epochMs(g.end) - epochMs(g.start)) / 1000;
    const li = h(
      "li",
      { class: "gap", "data-source": g.source },
      h("span", { class: "time", text: kst(g.end) }),
      h("span", { class: "title", text: `${g.source}: no data for ${secs.toFixed(1)} s` }),
      h("span", { class: "sub", text: g.reason || "" }),
    );
    insertByTime(el.gaps, li, epochMs(g.end), GAP_CAP, true);
  }

  async function loadAlerts() {
    try {
      const doc = await api("/api/alerts?limit=" + FEED_CAP);
      for (const a of doc.data || []) addAlert(a, false);
    } catch (_) {
      /* the live ones still come; the next (re)connect tries again */
    }
  }

  async function loadNews() {
    try {
      const doc = await api("/api/news?limit=" + FEED_CAP);
      for (const n of doc.data || []) addNews(n, false);
    } catch (_) {
      /* as above */
    }
  }

  // -- operations panel -----------------------------------------------------------------------
  function startPolling() {
    stopPolling();
    poll();
    st.pollTimer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    clearInterval(st.pollTimer);
    st.pollTimer = 0;
  }

  async function poll() {
    if (st.polling || !st.live) return;
    st.polling = true;
    try {
      const [slots, status] = await Promise.all([
        api("/api/slots").catch((err) => (err instanceof HttpError && err.status === 404 ? null : Promise.reject(err))),
        api("/api/ws/status"),
      ]);
      if (slots) {
        applyListing(slots);
        renderSlots(slots);
      } else {
        codesFromStatus(status);
        el.opsSlots.textContent = "This gateway has no slot manager.";
      }
      renderStatus(status);
      el.opsAge.textContent = `updated ${timeFmt.format(Date.now())}`;
      el.opsAge.classList.remove("error");
    } catch (err) {
      el.opsAge.textContent = `not updated: ${err.message}`;
      el.opsAge.classList.add("error");
      if (err instanceof HttpError && err.status === 401) {
        dropSocket(); // the token stopped working (expired): sign in again
        authFailed(err.message);
      }
    } finally {
      st.polling = false;
    }
  }

  function renderSlots(listing) {
    const bySession = new Map();
    for (const [name, u] of Object.entries(listing.usage || {})) {
      bySession.set(name, { usage: u, counts: Object.fromEntries(PRIORITIES.map((p) => [p, 0])) });
    }
    for (const s of listing.slots || []) {
      const entry = bySession.get(s.session);
      if (entry && s.priority in entry.counts) entry.counts[s.priority] += 1;
    }
    const nodes = [];
    for (const [name, { usage, counts }] of bySession) {
      const cap = Math.max(usage.capacity || 0, usage.used || 0, 1);
      const bar = h("div", { class: "bar" });
      for (const p of PRIORITIES) {
        if (!counts[p]) continue;
        const seg = h("span", { class: `p-${p}`, title: `${p}: ${counts[p]}` });
        seg.style.width = `${((counts[p] / cap) * 100).toFixed(1)}%`;
        bar.append(seg);
      }
      const parts = PRIORITIES.filter((p) => counts[p]).map((p) => `${p} ${counts[p]}`).join(" · ");
      nodes.push(
        h(
          "div",
          { class: "session", "data-session": name },
          h(
            "div",
            { class: "head" },
            h("span", {}, h("strong", { text: name }), usage.up ? "" : h("span", { class: "down-mark", text: " down" })),
            h("span", { class: "num", text: `${usage.used}/${usage.capacity}` }),
          ),
          bar,
          h("div", { class: "muted", text: parts || "no slots" }),
        ),
      );
    }
    const pending = (listing.pending || []).length;
    const extra = [
      `pending ${pending}`,
      `demand ${listing.demand ?? 0}`,
      listing.notice_session ? `notices on ${listing.notice_session}` : "",
      (listing.lost_sessions || []).length ? `lost: ${listing.lost_sessions.join(", ")}` : "",
    ].filter(Boolean);
    nodes.push(h("div", { class: "muted", text: extra.join(" · ") }));
    el.opsSlots.replaceChildren(...nodes);
  }

  function renderStatus(s) {
    const now = Date.now() / 1000;
    const rows = (s.upstream || []).map((u) => {
      const age = typeof u.last_frame_at === "number" ? `${Math.max(0, now - u.last_frame_at).toFixed(1)} s ago` : "–";
      return h(
        "tr",
        { "data-session": u.name, title: u.last_error || "" },
        h("td", { text: u.name }),
        h("td", { class: u.state === "streaming" ? "state-streaming" : "state-other", text: u.state }),
        h("td", { class: "num", text: fmtInt(u.reconnects) }),
        h("td", { class: "num", text: fmtInt(u.gaps) }),
        h("td", { class: "num", text: age }),
      );
    });
    el.opsUpstream.replaceChildren(...rows);
    const store = s.store || {};
    const queues = s.queues || {};
    const q = (name) => (queues[name] ? `${fmtInt(queues[name].depth)} / ${fmtInt(queues[name].size)}` : "–");
    const subs = Object.values(s.subscriptions || {}).reduce((a, b) => a + b, 0);
    const users = Array.isArray(s.active_users) ? s.active_users.length : s.active_user_count;
    const items = [
      ["clients", `${fmtInt(s.active_connections)} (${fmtInt(users)} users)`],
      ["subscriptions", fmtInt(subs)],
      ["rows stored", fmtInt(store.rows)],
      ["batches", fmtInt(store.batches)],
      ["pending rows", fmtInt(store.pending_rows)],
      ["spooled rows", fmtInt(store.spool_rows)],
      ["store retries", fmtInt(store.retries)],
      ["queue events", q("events")],
      ["queue store", q("store")],
      ["router events", fmtInt(s.router ? s.router.events : undefined)],
      ["uptime", typeof s.uptime_s === "number" ? `${Math.floor(s.uptime_s / 60)} min ${Math.floor(s.uptime_s % 60)} s` : "–"],
    ];
    if (store.last_error) items.push(["store error", store.last_error]);
    const nodes = [];
    for (const [k, v] of items) {
      nodes.push(h("dt", { text: k }), h("dd", { class: k === "store error" ? "bad" : "", text: v }));
    }
    el.opsCounters.replaceChildren(...nodes);
  }

  // -- start ----------------------------------------------------------------------------------
  chooseToken();
  if (st.token) connect();
  else showLogin();
})();
