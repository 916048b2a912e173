/* miniq's page in Cockpit: the queue as miniq's own command sees it.
 *
 * Every figure and every action is a `miniq` command run by the bridge with
 * the logged-in user's rights (cockpit.spawn): the user's own queue as the
 * user, the system queue as root where Cockpit grants administrative access
 * (superuser "try"), else through miniq's helper, which shows a user only
 * their own jobs.  So no rule of miniq's is made again here: what the page
 * may see and do is what `miniq` lets this user see and do, and its errors
 * are miniq's own one-line messages.
 *
 * Text from a job (its type, arguments, output, reasons, hosts) is only ever
 * set as text, never as HTML, and its control characters are shown as
 * escapes, as miniq's own face does (miniq/core/face.py).
 *
 * Live: a Cockpit file-watch channel on the queue's directories refreshes
 * the view within a fraction of a second of a change; where the user may
 * not read them (a user's view of the system queue), the view is asked
 * again every few seconds, through the helper.  A redraw never takes what a
 * person is doing: forms being filled in and the output being read stay in
 * place, and the focus stays on its control (draw()).
 *
 * No build step: this file is what the package ships.
 */
(function () {
    "use strict";

    const PAGE = 50;
    const POLL_SECONDS = 5;
    const STATES = ["running", "queued", "delayed", "done", "failed"];
    const DIRS = ["queue", "delayed", "running", "done", "failed"];

    const state = {
        queue: "user",
        admin: false,
        me: null,
        root: null,
        watches: [],
        polling: false,
        pending: null,
        ticker: null,
        follow: null,
        generation: 0,
        drawing: 0,
        busy: 0,
        again: false,
        took: 0,
    };

    // -- the face: a job's text shown as text -----------------------------------

    const SPECIAL = new Set([0x061C, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
        0x2066, 0x2067, 0x2068, 0x2069]);

    function hex(code, width) {
        return code.toString(16).padStart(width, "0");
    }

    /* miniq's face (miniq/core/face.py, checked against it by the browser test): control
       characters as escapes (\n \t \r, \x1b, \u009b, \u202e), a byte that was not UTF-8 as
       \xff, any other lone surrogate as \udXXX; with keepLines, line ends and tabs kept. */
    function visible(value, keepLines) {
        const text = value === null || value === undefined ? "" : String(value);
        let out = "";
        for (const ch of text) {
            const code = ch.codePointAt(0);
            if (keepLines && (code === 0x0A || code === 0x09)) out += ch;
            else if (code === 0x0A) out += "\\n";
            else if (code === 0x09) out += "\\t";
            else if (code === 0x0D) out += "\\r";
            else if (code < 0x20 || code === 0x7F) out += "\\x" + hex(code, 2);
            else if (code >= 0xDC80 && code <= 0xDCFF) out += "\\x" + hex(code - 0xDC00, 2);
            else if ((code >= 0x80 && code < 0xA0) || SPECIAL.has(code) || (code >= 0xD800 && code <= 0xDFFF))
                out += "\\u" + hex(code, 4);
            else out += ch;
        }
        return out;
    }

    /* Lines and tabs kept, every other control character an escape (a job's output, miniq show). */
    function visibleLines(value) {
        return visible(value, true);
    }

    /* An element: attributes set as properties or attributes, children as text nodes (never HTML). */
    function el(tag, attrs, ...children) {
        const node = document.createElement(tag);
        for (const [key, value] of Object.entries(attrs || {})) {
            if (value === null || value === undefined || value === false) continue;
            if (key === "class") node.className = value;
            else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
            else if (key === "dataset") Object.assign(node.dataset, value);
            else node.setAttribute(key, value === true ? "" : String(value));
        }
        for (const child of children.flat()) {
            if (child === null || child === undefined || child === false) continue;
            node.append(child instanceof Node ? child : document.createTextNode(String(child)));
        }
        return node;
    }

    /* A view drawn into main, in named parts (``data-part``). A live redraw (full false) never
     * takes what a person is doing: a part marked keep that is already there (a form being
     * filled in, the output being read) stays in place, untouched, and the control that had
     * the focus in a redrawn part has it again in the new drawing (same id, data-key or link). */
    function draw(main, parts, full) {
        const shown = parts.filter(part => part instanceof Node);
        const focused = full ? null : focusKey(main);
        const old = [...main.children];
        const same = !full && old.length === shown.length &&
            old.every((node, i) => node.dataset.part !== undefined && node.dataset.part === shown[i].dataset.part);
        if (!same) main.replaceChildren(...shown);
        else shown.forEach((part, i) => {
            if (part.dataset.keep !== "true") old[i].replaceWith(part);
        });
        if (focused) {
            const again = main.querySelector(focused);
            if (again && again !== document.activeElement) again.focus({ preventScroll: true });
        }
    }

    function part(name, node, keep) {
        node.dataset.part = name;
        if (keep) node.dataset.keep = "true";
        return node;
    }

    function focusKey(main) {
        const node = document.activeElement;
        if (!node || node === main || !main.contains(node) || node.closest("[data-keep='true']")) return null;
        if (node.id) return "#" + CSS.escape(node.id);
        if (node.dataset.key) return `[data-key="${CSS.escape(node.dataset.key)}"]`;
        if (node.getAttribute("href")) return `a[href="${CSS.escape(node.getAttribute("href"))}"]`;
        return null;
    }

    function shellWord(word) {
        const text = visible(word);
        return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : "'" + text.replace(/'/g, "'\\''") + "'";
    }

    // -- miniq, run by the bridge ------------------------------------------------

    function command(args) {
        return ["miniq", state.queue === "system" ? "--system" : "--user", ...args];
    }

    function options() {
        const opts = { err: "message", environ: ["LC_ALL=C.UTF-8", "COLUMNS=160"] };
        if (state.queue === "system") opts.superuser = "try";
        return opts;
    }

    function run(args) {
        return cockpit.spawn(command(args), options());
    }

    async function runJson(args) {
        return JSON.parse(await run(args));
    }

    function problem(ex) {
        const text = (ex && (ex.message || ex.problem)) || String(ex);
        return text.trim().split("\n").filter(line => line.trim()).join(" ") || "miniq failed";
    }

    function showError(ex) {
        const box = document.getElementById("alert");
        box.replaceChildren(el("strong", {}, "miniq says: "), el("span", { class: "mq-error-text" }, visible(problem(ex))),
            el("button", { type: "button", class: "mq-link", "aria-label": "Dismiss", onclick: () => { box.hidden = true; } }, "Dismiss"));
        box.hidden = false;
    }

    function clearError() {
        document.getElementById("alert").hidden = true;
    }

    function confirmAction(title, text) {
        const dialog = document.getElementById("confirm");
        document.getElementById("confirm-title").textContent = title;
        document.getElementById("confirm-text").textContent = text;
        return new Promise(resolve => {
            dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
            dialog.returnValue = "";
            dialog.showModal();
            document.getElementById("confirm-yes").focus();
        });
    }

    // -- times -------------------------------------------------------------------

    function seconds(value) {
        if (value === null || value === undefined) return "";
        const s = Math.max(0, Number(value));
        if (s < 1) return s.toFixed(2) + " s";
        if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
        if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
        if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
        return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
    }

    function ago(iso) {
        const t = Date.parse(iso);
        return Number.isNaN(t) ? "" : seconds((Date.now() - t) / 1000);
    }

    function when(row) {
        if (row.state === "running" && row.started) return "running for " + ago(row.started);
        if (row.ended) return "ended " + ago(row.ended) + " ago";
        if (row.not_before && Date.parse(row.not_before) > Date.now())
            return "due in " + seconds((Date.parse(row.not_before) - Date.now()) / 1000);
        return row.submitted ? "queued " + ago(row.submitted) + " ago" : "";
    }

    function outcome(row) {
        if (!row.outcome) return row.held ? "held" : "";
        return row.outcome === "exited" ? "exit " + row.exit_code : row.outcome;
    }

    // -- live --------------------------------------------------------------------

    function stopWatching() {
        for (const channel of state.watches) channel.close();
        state.watches = [];
        if (state.ticker) window.clearInterval(state.ticker);
        state.ticker = null;
    }

    function setLive(text) {
        document.getElementById("live").textContent = text;
    }

    function watch() {
        stopWatching();
        state.polling = state.root === null;
        const generation = state.generation;
        if (state.root) {
            for (const dir of DIRS) {
                const opts = { payload: "fswatch1", path: state.root + "/" + dir };
                if (state.queue === "system") opts.superuser = "try";
                const channel = cockpit.channel(opts);
                channel.addEventListener("message", changed);
                channel.addEventListener("close", (ev, info) => {
                    if (info && info.problem && generation === state.generation && !state.polling) {
                        state.polling = true;
                        setLive("Updates every " + POLL_SECONDS + " s (this queue's directories are not readable here)");
                        state.ticker = window.setInterval(changed, POLL_SECONDS * 1000);
                    }
                });
                state.watches.push(channel);
            }
        }
        if (state.polling) {
            setLive("Updates every " + POLL_SECONDS + " s");
            state.ticker = window.setInterval(changed, POLL_SECONDS * 1000);
        } else {
            setLive("Live");
            state.ticker = window.setInterval(changed, 30000); // times move on
        }
    }

    /* A change seen: one live redraw at a time, never a pile of them. Changes during a redraw
     * ask for one more after it, and the next waits at least as long as the last one took, so
     * a busy queue whose figures take seconds to read (every job's file) keeps the page's
     * `miniq` to one process and half the time, not one more per change. */
    function changed() {
        if (state.busy > 0) {
            state.again = true;
            return;
        }
        if (state.pending) return;
        state.pending = window.setTimeout(async () => {
            state.pending = null;
            if (state.busy > 0) {
                state.again = true;
                return;
            }
            const started = performance.now();
            await refresh(false);
            state.took = performance.now() - started;
        }, Math.max(150, state.took));
    }

    /* Whether this drawing is still the one wanted: the same queue and no newer drawing begun
     * (a view that took long to read never draws over the one the person went to since). */
    function stillWanted() {
        const generation = state.generation;
        const drawing = state.drawing;
        return () => generation === state.generation && drawing === state.drawing;
    }

    // -- routing -----------------------------------------------------------------

    function route() {
        const loc = cockpit.location;
        return { path: loc.path, options: loc.options };
    }

    function go(path, opts) {
        cockpit.location.go(path, Object.assign({ queue: state.queue }, opts || {}));
    }

    async function useQueue(queue) {
        state.queue = queue === "system" ? "system" : "user";
        state.generation += 1;
        document.getElementById("queue-user").setAttribute("aria-pressed", String(state.queue === "user"));
        document.getElementById("queue-system").setAttribute("aria-pressed", String(state.queue === "system"));
        try {
            const id = await cockpit.spawn(["id", "-u"], state.queue === "system" ? { superuser: "try" } : {});
            state.admin = state.queue === "system" && id.trim() === "0";
        } catch (ex) {
            state.admin = false;
        }
        try {
            state.root = (await run(["where"])).trim();
        } catch (ex) {
            state.root = null;
        }
        watch();
    }

    /* The view drawn again: whole (full: the person went somewhere, or acted) or live (a
     * change seen). A whole drawing supersedes any drawing under way; live ones wait for it. */
    async function refresh(full, clear = full) {
        state.busy += 1;
        try {
            await drawView(full, clear);
        } finally {
            state.busy -= 1;
            if (state.busy === 0 && state.again) {
                state.again = false;
                changed();
            }
        }
    }

    async function drawView(full, clear) {
        const { path, options: opts } = route();
        const queue = opts.queue === "system" ? "system" : "user";
        if (queue !== state.queue || state.root === null && full) await useQueue(queue);
        for (const tab of document.querySelectorAll(".mq-tab")) tab.removeAttribute("aria-current");
        const tabs = { "": "tab-overview", jobs: "tab-jobs", job: "tab-jobs", enqueue: "tab-enqueue", schedules: "tab-schedules" };
        const current = document.getElementById(tabs[path[0] || ""] || "tab-overview");
        current.setAttribute("aria-current", "page");
        for (const tab of document.querySelectorAll(".mq-tab"))
            tab.href = "#" + tab.getAttribute("href").slice(1).split("?")[0] + "?queue=" + state.queue;
        const view = path[0] || "";
        if (!full && (view === "enqueue")) return; // a form being filled in is not redrawn
        state.drawing += 1;
        const wanted = stillWanted();
        if (full && state.follow) {
            state.follow.close();
            state.follow = null;
        }
        const main = document.getElementById("main");
        main.setAttribute("aria-busy", "true");
        try {
            if (view === "jobs") await renderJobs(main, opts, full);
            else if (view === "job" && path[1]) await renderJob(main, path[1], full);
            else if (view === "enqueue") await renderEnqueue(main);
            else if (view === "schedules") await renderSchedules(main, full);
            else await renderOverview(main, full);
            if (clear) clearError();
        } catch (ex) {
            showError(ex);
        } finally {
            if (wanted()) {
                main.setAttribute("aria-busy", "false");
                document.body.dataset.ready = "true";
            }
        }
    }

    // -- overview ----------------------------------------------------------------

    function card(label, value, id) {
        return el("div", { class: "mq-card", id },
            el("div", { class: "mq-card-value" }, value),
            el("div", { class: "mq-card-label" }, label));
    }

    function chart(hours) {
        const ns = "http://www.w3.org/2000/svg";
        const shown = hours.slice().reverse(); // oldest first, left to right
        const top = Math.max(1, ...shown.map(h => h.done + h.failed));
        const width = 720;
        const height = 160;
        const bar = width / shown.length;
        const svg = document.createElementNS(ns, "svg");
        svg.setAttribute("viewBox", `0 0 ${width} ${height + 20}`);
        svg.setAttribute("class", "mq-chart");
        svg.setAttribute("role", "img");
        const total = shown.reduce((n, h) => n + h.done + h.failed, 0);
        const failed = shown.reduce((n, h) => n + h.failed, 0);
        svg.setAttribute("aria-label", `Finished jobs per hour over the last ${shown.length} hours: ${total} in all, ${failed} failed`);
        shown.forEach((h, i) => {
            const x = i * bar + 2;
            const doneHeight = (h.done / top) * height;
            const failedHeight = (h.failed / top) * height;
            for (const [cls, y, hgt] of [["mq-bar-done", height - doneHeight, doneHeight],
                ["mq-bar-failed", height - doneHeight - failedHeight, failedHeight]]) {
                if (hgt <= 0) continue;
                const rect = document.createElementNS(ns, "rect");
                rect.setAttribute("x", x);
                rect.setAttribute("y", y);
                rect.setAttribute("width", Math.max(1, bar - 4));
                rect.setAttribute("height", hgt);
                rect.setAttribute("class", cls);
                const title = document.createElementNS(ns, "title");
                const median = h.duration_seconds && h.duration_seconds.p50 !== null ? ", median run " + seconds(h.duration_seconds.p50) : "";
                title.textContent = `${h.hours_ago} h ago: ${h.done} done, ${h.failed} failed${median}`;
                rect.append(title);
                svg.append(rect);
            }
        });
        for (const [x, label] of [[0, shown.length + " h ago"], [width - 40, "now"]]) {
            const text = document.createElementNS(ns, "text");
            text.setAttribute("x", x);
            text.setAttribute("y", height + 16);
            text.setAttribute("class", "mq-chart-label");
            text.textContent = label;
            svg.append(text);
        }
        return svg;
    }

    // Asks, then runs a miniq command, its error shown as miniq's own; false if the person declined.
    async function confirmAndRun(args, title, text) {
        if (!await confirmAction(title, text)) return false;
        try {
            await run(args);
            clearError();
        } catch (ex) {
            showError(ex);
        }
        return true;
    }

    async function queueAction(args, title, text) {
        if (await confirmAndRun(args, title, text)) refresh(false);
    }

    /* First the counts from the queue's file names (quick on a long queue), then every figure. */
    async function renderOverview(main, full) {
        const wanted = stillWanted();
        const running = () => runJson(["list", "--json", "--state", "running", "--limit", "100"]);
        if (full || !main.querySelector("#types")) { // first the counts, from the file names alone
            const [counts, now] = await Promise.all([runJson(["stats", "--json", "--counts"]), running()]);
            if (!wanted()) return;
            drawOverview(main, counts, now, full);
        }
        document.body.dataset.painted = "true";
        const [stats, now] = await Promise.all([runJson(["stats", "--json"]), running()]);
        if (!wanted()) return;
        drawOverview(main, stats, now, false);
    }

    function drawOverview(main, stats, running, full) {
        const partial = stats.counts_only;
        const jobs = stats.jobs;
        const pausedAll = stats.paused.includes("@all");
        const cards = el("section", { class: "mq-cards", "aria-label": "Jobs per state" },
            card("Queued", jobs.queued, "count-queued"), card("Delayed", jobs.delayed, "count-delayed"),
            card("Held", jobs.held, "count-held"), card("Running", jobs.running, "count-running"),
            card("Oldest queued", partial ? "…" : stats.oldest_queued_age_seconds === null ? "none" : seconds(stats.oldest_queued_age_seconds), "oldest"));
        const types = new Set([...Object.keys(stats.jobs_by_type), ...Object.keys(stats.finished_by_type),
            ...Object.keys(stats.slots), ...stats.paused.filter(p => p !== "@all")]);
        const rows = [...types].sort().map(name => {
            const now = stats.jobs_by_type[name] || { queued: 0, delayed: 0, held: 0, running: 0 };
            const fin = stats.finished_by_type[name] || { done: 0, failed: 0, duration_seconds: { p50: null } };
            const slot = stats.slots[name];
            const paused = stats.paused.includes(name);
            const action = paused
                ? el("button", { type: "button", class: "mq-button mq-secondary", dataset: { key: "type:" + name }, onclick: () => queueAction(["resume", name], "Resume " + visible(name) + "?", "Its held jobs run again, in their order.") }, "Resume")
                : el("button", { type: "button", class: "mq-button mq-secondary", dataset: { key: "type:" + name }, onclick: () => queueAction(["pause", name], "Pause " + visible(name) + "?", "No new job of this type starts; running ones finish.") }, "Pause");
            return el("tr", { dataset: { type: name } },
                el("th", { scope: "row" }, visible(name)),
                el("td", {}, now.queued), el("td", {}, now.delayed), el("td", {}, now.held), el("td", {}, now.running),
                el("td", {}, fin.done), el("td", {}, fin.failed),
                el("td", {}, fin.duration_seconds.p50 === null ? "" : seconds(fin.duration_seconds.p50)),
                el("td", {}, slot ? `${slot.used} of ${slot.count}` : ""),
                el("td", {}, paused ? "paused" : ""),
                el("td", {}, action));
        });
        const window_h = Math.round(stats.window_seconds / 3600);
        const typeTable = el("table", { class: "mq-table", id: "types" },
            el("caption", {}, `Job types (finished: the last ${window_h} h)`),
            el("thead", {}, el("tr", {}, ...["Type", "Queued", "Delayed", "Held", "Running", "Done", "Failed", "Median run", "Slots", "Paused", ""].map(h => el("th", { scope: "col" }, h)))),
            el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 11 }, partial ? "Counting each type's jobs…" : "No jobs yet."))));
        const runningTable = el("table", { class: "mq-table", id: "running" },
            el("caption", {}, "Running now"),
            el("thead", {}, el("tr", {}, ...["ID", "Type", "Owner", "Host", "Running for"].map(h => el("th", { scope: "col" }, h)))),
            el("tbody", {}, running.length ? running.map(r => el("tr", {},
                el("td", {}, el("a", { href: jobHref(r.id) }, r.id)), el("td", {}, visible(r.name)), el("td", {}, visible(r.owner)),
                el("td", {}, visible(r.host)), el("td", {}, r.started ? ago(r.started) : ""))) : el("tr", {}, el("td", { colspan: 5 }, "Nothing runs."))));
        const hosts = Object.entries(stats.running_by_host).map(([host, n]) => `${visible(host)}: ${n}`).join(", ");
        const pauseAll = pausedAll
            ? el("button", { type: "button", class: "mq-button mq-secondary", id: "resume-all", onclick: () => queueAction(["resume"], "Resume the queue?", "Jobs start again.") }, "Resume the queue")
            : el("button", { type: "button", class: "mq-button mq-secondary", id: "pause-all", onclick: () => queueAction(["pause"], "Pause the whole queue?", "No new job starts; running ones finish.") }, "Pause the queue");
        draw(main, [
            pausedAll ? part("banner", el("p", { class: "mq-banner", id: "paused-banner" }, "The whole queue is paused: no new job starts.")) : "",
            part("cards", cards),
            part("chart", el("section", { class: "mq-panel", "aria-labelledby": "chart-title" },
                el("h2", { id: "chart-title" }, "Finished per hour"),
                partial ? el("p", {}, "Reading the day's records…") : chart(stats.finished_by_hour),
                el("p", { class: "mq-legend" }, el("span", { class: "mq-key mq-key-done" }), "done ", el("span", { class: "mq-key mq-key-failed" }), "failed"))),
            part("running", el("div", { class: "mq-scroll" }, runningTable)),
            hosts ? part("hosts", el("p", {}, "Running per host: " + hosts)) : "",
            part("types", el("div", { class: "mq-scroll" }, typeTable)),
            part("actions", el("div", { class: "mq-actions" }, pauseAll))], full);
    }

    // -- jobs --------------------------------------------------------------------

    function jobHref(id) {
        return "#/job/" + encodeURIComponent(id) + "?queue=" + state.queue;
    }

    async function renderJobs(main, opts, full) {
        const wanted = stillWanted();
        const chosen = STATES.includes(opts.state) ? opts.state : "queued";
        const page = Math.max(0, parseInt(opts.page || "0", 10) || 0);
        const args = ["list", "--json", "--state", chosen, "--limit", String(PAGE), "--offset", String(page * PAGE)];
        if (opts.type) args.push("--name", opts.type);
        if (opts.owner && state.admin) args.push("--owner", opts.owner);
        const rows = await runJson(args);
        if (!wanted()) return;
        const filters = el("form", { class: "mq-filters", id: "filters", onsubmit: ev => {
            ev.preventDefault();
            const data = new FormData(ev.target);
            const next = { state: data.get("state"), page: "0" };
            if (data.get("type")) next.type = data.get("type");
            if (data.get("owner")) next.owner = data.get("owner");
            go(["jobs"], next);
        } },
            el("label", {}, "State ", el("select", { name: "state", id: "filter-state", onchange: ev => ev.target.form.requestSubmit() },
                ...STATES.map(s => el("option", { value: s, selected: s === chosen }, s)))),
            el("label", {}, "Type ", el("input", { name: "type", id: "filter-type", value: opts.type || "", size: 14 })),
            state.admin ? el("label", {}, "User ", el("input", { name: "owner", id: "filter-owner", value: opts.owner || "", size: 10 })) : "",
            el("button", { type: "submit", class: "mq-button mq-secondary" }, "Filter"));
        const table = el("table", { class: "mq-table", id: "jobs" },
            el("caption", {}, `${chosen} jobs, page ${page + 1}` + (chosen === "done" || chosen === "failed" ? " (newest first pages)" : "")),
            el("thead", {}, el("tr", {}, ...["ID", "State", "Type", "Owner", "Arguments", "When", "Outcome"].map(h => el("th", { scope: "col" }, h)))),
            el("tbody", {}, rows.length ? rows.map(r => el("tr", { dataset: { id: r.id } },
                el("td", {}, el("a", { href: jobHref(r.id) }, r.id)),
                el("td", {}, el("span", { class: "mq-state mq-state-" + r.state }, r.held ? "held" : r.state)),
                el("td", {}, visible(r.name)),
                el("td", {}, visible(r.owner)),
                el("td", { class: "mq-args" }, r.argv.map(shellWord).join(" ")),
                el("td", {}, when(r)),
                el("td", {}, visible(outcome(r))))) : el("tr", {}, el("td", { colspan: 7 }, "No jobs."))));
        const nav = el("nav", { class: "mq-pager", "aria-label": "Pages" },
            el("button", { type: "button", class: "mq-button mq-secondary", id: "page-prev", disabled: page === 0,
                onclick: () => go(["jobs"], Object.assign({}, opts, { page: String(page - 1) })) }, "Previous"),
            el("span", {}, `Page ${page + 1}`),
            el("button", { type: "button", class: "mq-button mq-secondary", id: "page-next", disabled: rows.length < PAGE,
                onclick: () => go(["jobs"], Object.assign({}, opts, { page: String(page + 1) })) }, "Next"));
        draw(main, [part("filters", filters, true), part("table", el("div", { class: "mq-scroll" }, table)), part("pages", nav)], full);
    }

    // -- one job -----------------------------------------------------------------

    async function act(args, title, text) {
        if (await confirmAndRun(args, title, text)) await refresh(true, false); // miniq's refusal, if any, stays shown
    }

    async function renderJob(main, id, full) {
        const wanted = stillWanted();
        const [record, shown] = await Promise.all([runJson(["show", "--json", id]), run(["show", id])]);
        if (!wanted()) return;
        const jobState = record.state || "";
        const actions = [];
        if (["queued", "delayed", "running"].includes(jobState))
            actions.push(el("button", { type: "button", class: "mq-button mq-danger", id: "action-cancel",
                onclick: () => act(["cancel", "--no-wait", id], "Cancel this job?", jobState === "running" ? "It is stopped now." : "It will not run.") }, "Cancel"));
        if (jobState === "failed")
            actions.push(el("button", { type: "button", class: "mq-button mq-primary", id: "action-retry",
                onclick: () => act(["retry", id], "Retry this job?", "It is queued again with the same id and arguments.") }, "Retry"));
        if (jobState === "running")
            actions.push(el("button", { type: "button", class: "mq-button mq-secondary", id: "action-requeue",
                onclick: () => act(["requeue", id], "Requeue this job?", "Only for a job whose processor is gone: it runs again from the start.") }, "Requeue"));
        // The output read so far stays while it is still what the job says: read in the same
        // state, or followed while it ran to its end. A job that starts, ends or goes back
        // while the page looks has its output read again (followed while it runs).
        const old = document.getElementById("output");
        const keepOutput = !full && old !== null && old.dataset.id === id &&
            (old.dataset.read === jobState || (old.dataset.read === "running" && ["done", "failed"].includes(jobState)));
        const output = keepOutput ? old
            : el("pre", { class: "mq-output", id: "output", dataset: { id, read: jobState }, tabindex: "0", "aria-label": "Output" });
        const title = jobState === "running" ? "Output (live)" : "Output";
        const section = el("section", { class: "mq-panel", "aria-labelledby": "output-title" }, el("h3", { id: "output-title" }, title));
        if (!keepOutput) section.append(output);
        draw(main, [
            part("back", el("p", {}, el("a", { href: "#/jobs?queue=" + state.queue }, "All jobs"))),
            part("title", el("h2", { class: "mq-job-title" }, visible(record.name || "?"), " ",
                el("span", { class: "mq-state mq-state-" + jobState, id: "job-state" }, jobState))),
            part("actions", el("div", { class: "mq-actions" }, actions)),
            part("record", el("section", { class: "mq-panel", "aria-labelledby": "record-title" },
                el("h3", { id: "record-title" }, "Record"),
                el("pre", { class: "mq-record", id: "record" }, visibleLines(shown)))),
            part("output", section, keepOutput)], full);
        if (keepOutput) {
            // The output being read stays where it is, scrolled and selected as it was.
            if (!output.isConnected) section.append(output);
            document.getElementById("output-title").textContent = title;
            return;
        }
        if (state.follow) state.follow.close();
        const follow = run(jobState === "running" ? ["logs", "-f", id] : ["logs", id]);
        state.follow = follow;
        follow.stream(chunk => {
            const atEnd = output.scrollHeight - output.scrollTop - output.clientHeight < 8; // else the person scrolled up to read
            output.append(document.createTextNode(visibleLines(chunk)));
            if (atEnd) output.scrollTop = output.scrollHeight;
        });
        follow.catch(ex => {
            if (state.follow === follow) output.append(el("span", { class: "mq-error-text" }, visible(problem(ex))));
        }).then(() => {
            if (state.follow === follow) state.follow = null;
        });
    }

    // -- enqueue -----------------------------------------------------------------

    async function jobTypes() {
        if (!state.root) return [];
        try {
            const found = await cockpit.spawn(["find", state.root + "/jobs", "-maxdepth", "1", "-name", "*.job", "-printf", "%f\\n"],
                state.queue === "system" ? { superuser: "try", err: "ignore" } : { err: "ignore" });
            return found.split("\n").filter(Boolean).map(n => n.slice(0, -4)).sort();
        } catch (ex) {
            return [];
        }
    }

    async function renderEnqueue(main) {
        const types = await jobTypes();
        const field = (label, name, attrs) => el("label", { class: "mq-field" }, el("span", {}, label), el("input", Object.assign({ name, id: "enqueue-" + name }, attrs || {})));
        const result = el("p", { id: "enqueue-result", "aria-live": "polite" });
        const form = el("form", { class: "mq-form", id: "enqueue", onsubmit: async ev => {
            ev.preventDefault();
            const data = new FormData(ev.target);
            const args = ["enqueue"];
            for (const [key, flag] of [["in", "--in"], ["priority", "--priority"], ["timeout", "--timeout"], ["memory-max", "--memory-max"],
                ["cpu-quota", "--cpu-quota"], ["retries", "--retries"], ["unique-key", "--unique-key"], ["on-success", "--on-success"],
                ["on-failure", "--on-failure"]]) {
                const value = String(data.get(key) || "").trim();
                if (value) args.push(flag, value);
            }
            if (data.get("unique") && !data.get("unique-key")) args.push("--unique");
            const name = String(data.get("name") || "").trim();
            const argv = String(data.get("argv") || "").split("\n").map(a => a.replace(/\r$/, "")).filter((a, i, all) => a !== "" || i < all.length - 1);
            args.push(name, "--", ...argv);
            try {
                const id = (await run(args)).trim();
                clearError();
                result.replaceChildren("Queued ", el("a", { href: jobHref(id), id: "enqueued" }, id));
            } catch (ex) {
                result.replaceChildren();
                showError(ex);
            }
        } },
            el("label", { class: "mq-field" }, el("span", {}, "Job type"),
                el("input", { name: "name", id: "enqueue-name", list: "job-types", required: true, autocomplete: "off" }),
                el("datalist", { id: "job-types" }, types.map(t => el("option", { value: t })))),
            el("label", { class: "mq-field mq-wide" }, el("span", {}, "Arguments, one per line"),
                el("textarea", { name: "argv", id: "enqueue-argv", rows: 4 })),
            field("Start in (e.g. 10m)", "in", { placeholder: "now" }),
            field("Priority", "priority", { type: "number", min: -1000, max: 1000, placeholder: "0" }),
            field("Time limit (e.g. 1h)", "timeout"),
            field("Memory limit (e.g. 512M)", "memory-max"),
            field("CPU quota (e.g. 50%)", "cpu-quota"),
            field("Retries", "retries", { type: "number", min: 0, max: 100 }),
            el("label", { class: "mq-check" }, el("input", { type: "checkbox", name: "unique", id: "enqueue-unique" }), "Unique: not while the same job is unfinished"),
            field("Unique key", "unique-key"),
            field("On success, queue type", "on-success", { list: "job-types" }),
            field("On failure, queue type", "on-failure", { list: "job-types" }),
            el("div", { class: "mq-actions mq-wide" }, el("button", { type: "submit", class: "mq-button mq-primary", id: "enqueue-submit" }, "Enqueue")));
        main.replaceChildren(form, result);
    }

    // -- schedules ---------------------------------------------------------------

    async function renderSchedules(main, full) {
        const wanted = stillWanted();
        const found = await runJson(["every", "--list", "--json"]);
        if (!wanted()) return;
        const table = el("table", { class: "mq-table", id: "schedules" },
            el("caption", {}, "Recurring jobs (persistent systemd timers)"),
            el("thead", {}, el("tr", {}, ...["ID", "Calendar", "Job", "Next", "Last", ""].map(h => el("th", { scope: "col" }, h)))),
            el("tbody", {}, found.length ? found.map(s => el("tr", {},
                el("td", {}, s.id), el("td", {}, visible(s.calendar)),
                el("td", { class: "mq-args" }, [s.name, ...s.argv].map(shellWord).join(" ") + (s.stack ? " (stacked)" : "")),
                el("td", {}, visible(s.next)), el("td", {}, visible(s.last)),
                el("td", {}, el("button", { type: "button", class: "mq-button mq-danger", dataset: { key: "remove:" + s.id }, onclick: () => queueAction(["every", "--remove", s.id], "Remove this schedule?", "Its timer is stopped and removed; jobs it queued stay.") }, "Remove")))) :
                el("tr", {}, el("td", { colspan: 6 }, "No schedules."))));
        const form = el("form", { class: "mq-form", id: "schedule-add", onsubmit: async ev => {
            ev.preventDefault();
            const data = new FormData(ev.target);
            const argv = String(data.get("argv") || "").split("\n").filter(a => a !== "");
            const args = ["every"];
            if (data.get("stack")) args.push("--stack");
            args.push(String(data.get("calendar")).trim(), String(data.get("name")).trim(), "--", ...argv);
            try {
                await run(args);
                clearError();
                ev.target.reset(); // added: the form is kept by live redraws, so empty it here
                refresh(false);
            } catch (ex) {
                showError(ex);
            }
        } },
            el("h2", {}, "Add a schedule"),
            el("label", { class: "mq-field" }, el("span", {}, "Calendar (e.g. daily, Mon..Fri 03:00)"), el("input", { name: "calendar", id: "schedule-calendar", required: true })),
            el("label", { class: "mq-field" }, el("span", {}, "Job type"), el("input", { name: "name", id: "schedule-name", required: true })),
            el("label", { class: "mq-field mq-wide" }, el("span", {}, "Arguments, one per line"), el("textarea", { name: "argv", rows: 3 })),
            el("label", { class: "mq-check" }, el("input", { type: "checkbox", name: "stack" }), "Stack: queue even while the last one is unfinished"),
            el("div", { class: "mq-actions mq-wide" }, el("button", { type: "submit", class: "mq-button mq-primary" }, "Add")));
        draw(main, [part("table", el("div", { class: "mq-scroll" }, table)), part("add", form, true)], full);
    }

    // -- theme: Cockpit's light, dark or the system's ----------------------------

    function theme() {
        let style = "auto";
        try {
            style = window.localStorage.getItem("shell:style") || "auto";
        } catch (ex) { /* no storage: follow the system */ }
        const dark = style === "dark" || (style === "auto" && window.matchMedia("(prefers-color-scheme: dark)").matches);
        document.documentElement.classList.toggle("pf-theme-dark", dark);
    }

    // -- start -------------------------------------------------------------------

    function start() {
        theme();
        window.addEventListener("storage", ev => { if (ev.key === "shell:style") theme(); });
        window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", theme);
        document.getElementById("queue-user").addEventListener("click", () => go(cockpit.location.path, { queue: "user" }));
        document.getElementById("queue-system").addEventListener("click", () => go(cockpit.location.path, { queue: "system" }));
        cockpit.addEventListener("locationchanged", () => refresh(true));
        cockpit.user().then(user => { state.me = user.name; });
        refresh(true);
    }

    // For the browser tests: the face alone.
    window.miniqVisible = visible;

    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
}());
