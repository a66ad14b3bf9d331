/// The live status page, built into the binary (no external assets, no network needed): it
/// polls `/api/v1/hops` and `/api/v1/diagnose` every 2 s and renders, per path, the segments
/// as a stacked bar and a table (p50/p99, Δ vs baseline, a 2-minute sparkline), the codes and
/// error rate, this sidecar's overhead, the diagnosis verdicts, the region × region probe matrix
/// and, in the demo, the demo's settings and what its stand-ins are.
///
/// Probe paths are told apart by their target (the `insight-probe-target` header), shown as
/// `span.probe-target` after the method.
///
/// Stable hooks for tests: `article.path[data-service][data-method][data-source][data-target]`,
/// `tr.segment-row[data-segment][data-next]` with `td.p50`/`td.p99` (`data-ms`),
/// `td.matrix-cell[data-source-region][data-target-region][data-success][data-latency-ms]`,
/// `.verdict[data-blame-segment][data-blame-next]`, `.overhead[data-p50-ms][data-p99-ms]`,
/// `span.code[data-code][data-count]`, `#demo` (hidden unless a demo runs).
enum StatusPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Insight status</title>
        <style>
        :root {
          --fg: #1d2330; --muted: #5f6b7a; --line: #dde2e8; --bg: #f5f7fa; --card: #fff;
          --good: #2e7d32; --good-bg: #e3f3e4; --warn: #9a6700; --warn-bg: #fff4d6;
          --bad: #b3261e; --bad-bg: #fde7e5; --accent: #2f5fb3;
        }
        * { box-sizing: border-box; }
        body {
          margin: 0; background: var(--bg); color: var(--fg);
          font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
        }
        header.top {
          display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px;
          padding: 10px 20px; background: #1d2330; color: #fff;
        }
        header.top h1 { margin: 0; font-size: 18px; }
        header.top .meta { color: #c3cad5; font-size: 13px; }
        #conn { margin-left: auto; font-size: 12px; padding: 2px 8px; border-radius: 10px; }
        #conn.ok { background: #2e7d32; } #conn.stale { background: #b3261e; }
        main { padding: 14px 20px 30px; max-width: 1500px; margin: 0 auto; }
        h2 { font-size: 15px; margin: 0 0 8px; }
        h3 { font-size: 14px; margin: 0; font-weight: 600; word-break: break-all; }
        .card {
          background: var(--card); border: 1px solid var(--line); border-radius: 6px;
          padding: 10px 12px; margin-bottom: 12px;
        }
        .muted { color: var(--muted); }
        .num { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
        #demo { border-left: 4px solid var(--accent); }
        #demo .note { margin: 4px 0 8px; }
        #demo dl { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 0 0 8px; }
        #demo dt { color: var(--muted); font-size: 12px; }
        #demo dd { margin: 0; font-weight: 600; }
        #demo form { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; font-size: 13px; }
        #demo input { width: 80px; padding: 2px 4px; font: inherit; }
        .overview { display: grid; grid-template-columns: minmax(300px, 1fr) minmax(300px, 1.3fr); gap: 12px; }
        ul.verdicts { list-style: none; margin: 0; padding: 0; }
        ul.verdicts li { padding: 3px 0; border-bottom: 1px solid var(--line); }
        ul.verdicts li:last-child { border-bottom: 0; }
        .probe-target { color: var(--accent); font-weight: 600; }
        .tag {
          display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px;
          background: #e8ecf2; color: var(--muted); margin-right: 4px;
        }
        table { border-collapse: collapse; }
        table.matrix th, table.matrix td { border: 1px solid var(--line); padding: 6px 8px; vertical-align: top; }
        table.matrix th { background: #eef1f5; font-weight: 600; font-size: 13px; }
        td.matrix-cell { min-width: 150px; }
        td.matrix-cell .big { font-size: 16px; font-weight: 700; }
        td.matrix-cell ul { margin: 4px 0 0; padding: 0; list-style: none; font-size: 12px; color: var(--muted); }
        td.matrix-cell.good { background: var(--good-bg); } td.matrix-cell.good .big { color: var(--good); }
        td.matrix-cell.warn { background: var(--warn-bg); } td.matrix-cell.warn .big { color: var(--warn); }
        td.matrix-cell.bad { background: var(--bad-bg); } td.matrix-cell.bad .big { color: var(--bad); }
        td.matrix-cell.empty { color: var(--muted); background: #fafbfc; }
        .columns { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; align-items: start; }
        .columns > section, .overview > section { min-width: 0; }
        .scroll { overflow-x: auto; }
        @media (max-width: 900px) { .columns, .overview { grid-template-columns: 1fr; } }
        article.path header { display: flex; justify-content: space-between; gap: 10px; align-items: baseline; }
        .verdict { margin: 6px 0; padding: 4px 8px; border-radius: 4px; font-size: 13px; }
        .verdict.ok { background: var(--good-bg); color: var(--good); }
        .verdict.blame { background: var(--bad-bg); color: var(--bad); font-weight: 600; }
        .verdict.collecting { background: #eef1f5; color: var(--muted); }
        svg.stack { width: 100%; height: auto; display: block; margin: 4px 0; }
        svg.stack text { font-size: 12px; fill: #fff; pointer-events: none; }
        table.segments { width: 100%; font-size: 13px; margin-top: 4px; }
        table.segments th {
          text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
          border-bottom: 1px solid var(--line); padding: 3px 6px;
        }
        table.segments th.num { text-align: right; }
        table.segments td { padding: 3px 6px; border-bottom: 1px solid #eef1f5; }
        table.segments td.name { white-space: nowrap; }
        table.segments tr.blamed td { background: var(--bad-bg); }
        table.segments tr.total-row td { border-top: 1px solid var(--line); color: var(--muted); }
        .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
        td.delta.up { color: var(--bad); font-weight: 600; }
        svg.sparkline { display: block; }
        .facts { display: flex; flex-wrap: wrap; gap: 4px 18px; margin-top: 6px; font-size: 13px; }
        span.code { display: inline-block; padding: 0 6px; border-radius: 8px; margin-right: 4px; font-size: 12px; }
        span.code.ok { background: var(--good-bg); color: var(--good); }
        span.code.err { background: var(--bad-bg); color: var(--bad); font-weight: 600; }
        .empty-note { color: var(--muted); font-style: italic; }
        #error { display: none; }
        #error.show { display: block; background: var(--bad-bg); color: var(--bad); }
        </style>
        </head>
        <body>
        <header class="top">
          <h1>Insight status</h1>
          <span class="meta" id="hop">hop …</span>
          <span class="meta" id="window"></span>
          <span class="meta" id="updated"></span>
          <span id="conn" class="stale">connecting…</span>
        </header>
        <main>
          <div id="error" class="card"></div>
          <section id="demo" class="card" hidden>
            <h2>Demo</h2>
            <p class="note"><strong>This is a demo on loopback.</strong> <span id="demo-note"></span></p>
            <dl id="demo-settings"></dl>
            <form id="demo-form" autocomplete="off">
              <span class="muted">Change it:</span>
              <label>WAN delay <input name="wan_delay" placeholder="80ms"></label>
              <label>service latency <input name="service_latency" placeholder="40ms"></label>
              <label>loss <input name="loss" placeholder="0.01"></label>
              <button type="submit">Apply</button>
              <span id="demo-result" class="muted"></span>
            </form>
          </section>
          <div class="overview">
            <section class="card">
              <h2>Diagnosis <span class="muted" id="diag-window"></span></h2>
              <ul id="diagnosis" class="verdicts"><li class="muted">loading…</li></ul>
            </section>
            <section class="card">
              <h2>Probe matrix <span class="muted">(source region → target region: success ratio, p50)</span></h2>
              <div id="matrix"><span class="muted">loading…</span></div>
            </section>
          </div>
          <div class="columns">
            <section>
              <h2>Traffic <span class="muted">(real calls through this hop)</span></h2>
              <div id="traffic-paths"><div class="card muted">loading…</div></div>
            </section>
            <section>
              <h2>Probes <span class="muted">(synthetic calls)</span></h2>
              <div id="probe-paths"><div class="card muted">loading…</div></div>
            </section>
          </div>
          <p class="muted">A segment <em>X → Y</em> is the time between X's sidecar sending a call on and the next
          sidecar Y (or the service) answering it, minus Y's own share: the network and any hops in between.
          Proxy overhead is this sidecar's own time. Values are over the recent window; the trend is the p50
          per 5 s over the last 2 minutes.</p>
        </main>
        <script>
        'use strict';
        const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1', '#9c755f', '#edc948'];
        const state = { hops: null, diag: null, lastOk: 0, error: null };

        function el(id) { return document.getElementById(id); }
        function esc(s) {
          return String(s).replace(/[&<>"']/g, c => ({
            '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'
          })[c]);
        }
        function ms(v) {
          if (v === null || v === undefined || !isFinite(v)) return '–';
          const a = Math.abs(v);
          return a < 10 ? v.toFixed(2) : a < 100 ? v.toFixed(1) : v.toFixed(0);
        }
        function pct(r) {
          if (!isFinite(r)) return '–';
          const p = r * 100;
          return (p === 0 || p === 100 ? p.toFixed(0) : p < 1 || p > 99 ? p.toFixed(2) : p.toFixed(1)) + '%';
        }
        function segLabel(s) { return s.segment + ' → ' + s.next; }
        function segKey(s) { return s.segment + '|' + s.next; }
        function pathKey(p) { return p.source + '|' + p.service + '|' + p.method + '|' + (p.target || ''); }
        function targetLabel(p) {
          return p.target ? ' <span class="probe-target" data-target="' + esc(p.target) + '">→ ' + esc(p.target) +
            '</span>' : '';
        }
        function targetAttr(p) { return p.target ? ' data-target="' + esc(p.target) + '"' : ''; }
        function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }

        async function getJSON(url) {
          const r = await fetch(url, { cache: 'no-store' });
          if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
          return r.json();
        }

        async function tick() {
          try {
            const [h, d] = await Promise.all([getJSON('/api/v1/hops'), getJSON('/api/v1/diagnose')]);
            state.hops = h; state.diag = d; state.lastOk = Date.now(); state.error = null;
          } catch (e) {
            state.error = String((e && e.message) || e);
          }
          try { render(); } catch (e) { showError('render failed: ' + e); }
          setTimeout(tick, 2000);
        }

        function showError(text) {
          const e = el('error');
          e.textContent = text || '';
          e.className = text ? 'card show' : 'card';
        }

        function render() {
          const conn = el('conn');
          if (state.error) {
            conn.className = 'stale';
            conn.textContent = state.lastOk ? 'stale: last update ' + new Date(state.lastOk).toLocaleTimeString()
              : 'no data';
            showError('Cannot reach the sidecar: ' + state.error);
          } else {
            conn.className = 'ok';
            conn.textContent = 'live';
            showError('');
          }
          const h = state.hops, d = state.diag;
          if (!h) return;
          el('hop').textContent = 'hop ' + h.hop + ' · region ' + h.region;
          el('window').textContent = 'recent window ' + Math.round(h.window_seconds) + ' s';
          el('updated').textContent = 'updated ' + clock(h.now);
          renderDemo(h.demo);
          const verdicts = {};
          for (const v of (d && d.paths) || []) verdicts[pathKey(v)] = v;
          renderDiagnosis(d);
          renderMatrix(h.probes || []);
          const paths = (h.paths || []).slice().sort((a, b) => (b.count - a.count) || pathKey(a).localeCompare(pathKey(b)));
          renderPaths(el('traffic-paths'), paths.filter(p => p.source === 'traffic'), verdicts, h.now,
            'No traffic through this hop in the recent window.');
          renderPaths(el('probe-paths'), paths.filter(p => p.source !== 'traffic'), verdicts, h.now,
            'No probe calls through this hop in the recent window.');
        }

        function renderDemo(demo) {
          const box = el('demo');
          if (!demo) { box.hidden = true; return; }
          box.hidden = false;
          el('demo-note').textContent = demo.note;
          const items = [
            ['WAN delay (each way)', ms(demo.wan_delay_ms) + ' ms', 'wan_delay_ms', demo.wan_delay_ms],
            ['service latency', ms(demo.service_latency_ms) + ' ms', 'service_latency_ms', demo.service_latency_ms],
            ['WAN loss', pct(demo.loss), 'loss', demo.loss],
            ['traffic rate', demo.rate + ' calls/s', 'rate', demo.rate],
          ];
          el('demo-settings').innerHTML = items.map(([k, v, id, raw]) =>
            '<div><dt>' + esc(k) + '</dt><dd id="demo-' + id + '" data-value="' + esc(raw) + '">' + esc(v) + '</dd></div>'
          ).join('');
        }

        function renderDiagnosis(d) {
          const ul = el('diagnosis');
          if (!d) { ul.innerHTML = '<li class="muted">no diagnosis yet</li>'; return; }
          el('diag-window').textContent = '(recent ' + Math.round(d.window_seconds) + ' s vs the baseline before it)';
          const list = (d.paths || []).slice().sort((a, b) =>
            (a.source === b.source ? 0 : a.source === 'traffic' ? -1 : 1) || pathKey(a).localeCompare(pathKey(b)));
          if (!list.length) { ul.innerHTML = '<li class="muted">no calls seen yet</li>'; return; }
          ul.innerHTML = list.map(v => {
            const cls = verdictClass(v);
            return '<li class="verdict-row" data-service="' + esc(v.service) + '" data-method="' + esc(v.method) +
              '" data-source="' + esc(v.source) + '"' + targetAttr(v) + blameAttrs(v) + '><span class="tag">' +
              esc(v.source) + '</span><b>' + esc(v.service) + '/' + esc(v.method) + '</b>' + targetLabel(v) + ': <span class="verdict-text ' + cls + '">' +
              esc(v.verdict) + '</span></li>';
          }).join('');
        }

        function verdictClass(v) {
          if (v.blame || (v.failures && v.failures.rate >= 0.05)) return 'blame';
          if (/^collecting/.test(v.verdict)) return 'collecting';
          return 'ok';
        }
        function blameAttrs(v) {
          return v.blame ? ' data-blame-segment="' + esc(v.blame.segment) + '" data-blame-next="' + esc(v.blame.next) + '"'
            : '';
        }

        function renderMatrix(probes) {
          const box = el('matrix');
          if (!probes.length) { box.innerHTML = '<span class="empty-note">no probes configured here</span>'; return; }
          const regions = Array.from(new Set(probes.flatMap(p => [p.source_region, p.target_region]))).sort();
          const cells = {};
          for (const p of probes) (cells[p.source_region + '|' + p.target_region] ||= []).push(p);
          let html = '<table class="matrix"><thead><tr><th>from \\ to</th>' +
            regions.map(r => '<th>region ' + esc(r) + '</th>').join('') + '</tr></thead><tbody>';
          for (const src of regions) {
            html += '<tr><th>region ' + esc(src) + '</th>';
            for (const dst of regions) {
              const list = cells[src + '|' + dst] || [];
              const attrs = ' data-source-region="' + esc(src) + '" data-target-region="' + esc(dst) + '"';
              if (!list.length) {
                html += '<td class="matrix-cell empty"' + attrs + '>–</td>';
                continue;
              }
              const success = Math.min(...list.map(p => p.success_ratio));
              const latency = Math.max(...list.map(p => p.p50_ms));
              const cls = success >= 0.99 ? 'good' : success >= 0.9 ? 'warn' : 'bad';
              html += '<td class="matrix-cell ' + cls + '"' + attrs + ' data-success="' + success +
                '" data-latency-ms="' + latency + '"><div class="big">' + pct(success) + '</div><div>p50 ' + ms(latency) +
                ' ms</div><ul>' + list.map(p => '<li class="probe" data-target="' + esc(p.target) + '" title="' +
                  esc(p.code + (p.message ? ': ' + p.message : '')) + '">' + esc(p.target) + ' · ' + esc(p.kind) +
                  ' from ' + esc(p.hop) + ': ' + pct(p.success_ratio) + ', p50 ' + ms(p.p50_ms) + ' ms, last ' +
                  ms(p.last_ms) + ' ms' + (p.result !== 'success' ? ' — <b>' + esc(p.code) + '</b> ' + esc(p.message) : '') +
                  '</li>').join('') + '</ul></td>';
            }
            html += '</tr>';
          }
          box.innerHTML = '<div class="scroll">' + html + '</tbody></table></div>';
        }

        function renderPaths(box, paths, verdicts, now, emptyText) {
          if (!paths.length) { box.innerHTML = '<div class="card empty-note">' + esc(emptyText) + '</div>'; return; }
          box.innerHTML = paths.map(p => pathCard(p, verdicts[pathKey(p)], now)).join('');
        }

        function pathCard(p, v, now) {
          const shifts = {};
          for (const s of (v && v.segments) || []) shifts[segKey(s)] = s;
          const blameKey = v && v.blame ? segKey(v.blame) : null;
          let html = '<article class="card path" data-service="' + esc(p.service) + '" data-method="' + esc(p.method) +
            '" data-source="' + esc(p.source) + '"' + targetAttr(p) + '><header><h3>' + esc(p.service) + '/<span>' +
            esc(p.method) + '</span>' + targetLabel(p) + '</h3><span class="muted count" data-count="' + p.count + '">' + p.count +
            ' calls in window</span></header>';
          if (v) {
            html += '<div class="verdict ' + verdictClass(v) + '"' + blameAttrs(v) + '>' + esc(v.verdict) + '</div>';
          }
          html += stackBar(p.segments);
          html += '<div class="scroll"><table class="segments"><thead><tr><th>segment</th><th class="num">p50 ms</th>' +
            '<th class="num">p99 ms</th><th class="num">calls</th>' +
            '<th class="num" title="recent p50 minus the baseline p50 (diagnosis)">Δp50 vs base</th>' +
            '<th>p50, last 2 min</th></tr></thead><tbody>';
          p.segments.forEach((s, i) => {
            const shift = shifts[segKey(s)];
            const blamed = blameKey === segKey(s);
            const delta = shift ? shift.delta_p50_ms : null;
            const up = shift && shift.moved;
            html += '<tr class="segment-row' + (blamed ? ' blamed' : '') + '" data-segment="' + esc(s.segment) +
              '" data-next="' + esc(s.next) + '"><td class="name"><span class="swatch" style="background:' +
              PALETTE[i % PALETTE.length] + '"></span>' + esc(segLabel(s)) + '</td><td class="num p50" data-ms="' +
              s.p50_ms + '">' + ms(s.p50_ms) + '</td><td class="num p99" data-ms="' + s.p99_ms + '">' + ms(s.p99_ms) +
              '</td><td class="num count">' + s.count + '</td><td class="num delta' + (up ? ' up' : '') + '"' +
              (shift ? ' data-ms="' + delta + '" title="baseline p50 ' + ms(shift.baseline_p50_ms) + ' ms, confidence ' +
                shift.confidence.toFixed(2) + '"' : '') + '>' + (shift ? (delta >= 0 ? '+' : '') + ms(delta) : '–') +
              '</td><td class="trend">' + sparkline(p.timeline || [], i, now, PALETTE[i % PALETTE.length]) + '</td></tr>';
          });
          html += '</tbody><tfoot><tr class="total-row"><td>whole call, seen from this hop</td><td class="num dur-p50">' +
            ms(p.dur_p50_ms) + '</td><td class="num dur-p99">' + ms(p.dur_p99_ms) + '</td><td></td><td></td><td></td>' +
            '</tr></tfoot></table></div>';
          const codes = Object.entries(p.codes || {}).sort((a, b) => b[1] - a[1]);
          html += '<div class="facts"><span class="overhead" data-p50-ms="' + p.overhead_p50_ms + '" data-p99-ms="' +
            p.overhead_p99_ms + '">proxy overhead: p50 <b>' + ms(p.overhead_p50_ms) + '</b> ms · p99 <b>' +
            ms(p.overhead_p99_ms) + '</b> ms</span><span class="errors" data-error-rate="' + p.error_rate +
            '">error rate <b>' + pct(p.error_rate) + '</b> ' + codes.map(([c, n]) => '<span class="code ' +
              (c === 'OK' ? 'ok' : 'err') + '" data-code="' + esc(c) + '" data-count="' + n + '">' + esc(c) + ' ' + n +
              '</span>').join('') + '</span></div>';
          if (v && v.failures && v.failures.message) {
            html += '<div class="muted">most common failure: ' + esc(v.failures.message) + '</div>';
          }
          return html + '</article>';
        }

        function stackBar(segments) {
          const W = 600, H = 30;
          const total = segments.reduce((a, s) => a + Math.max(0, s.p50_ms), 0);
          if (!(total > 0)) return '<svg class="stack" viewBox="0 0 ' + W + ' ' + H + '"><rect width="' + W +
            '" height="' + H + '" fill="#eef1f5"/></svg>';
          let x = 0, out = '<svg class="stack" viewBox="0 0 ' + W + ' ' + H + '" role="img" aria-label="p50 per segment">';
          segments.forEach((s, i) => {
            const w = Math.max(0, s.p50_ms) / total * W;
            const color = PALETTE[i % PALETTE.length];
            out += '<g class="bar-seg" data-segment="' + esc(s.segment) + '" data-next="' + esc(s.next) + '"><rect x="' +
              x.toFixed(2) + '" y="0" width="' + w.toFixed(2) + '" height="' + H + '" fill="' + color +
              '"><title>' + esc(segLabel(s)) + ': p50 ' + ms(s.p50_ms) + ' ms, p99 ' + ms(s.p99_ms) + ' ms</title></rect>';
            const long = segLabel(s) + ' ' + ms(s.p50_ms) + ' ms', short = ms(s.p50_ms);
            const label = w > long.length * 6.8 + 8 ? long : w > short.length * 7 + 8 ? short : '';
            if (label) out += '<text x="' + (x + 5).toFixed(2) + '" y="' + (H / 2 + 4) + '">' + esc(label) + '</text>';
            out += '</g>';
            x += w;
          });
          return out + '</svg>';
        }

        function sparkline(timeline, i, now, color) {
          const W = 100, H = 26, span = 120;
          const pts = timeline.filter(t => Array.isArray(t.p50_ms) && i < t.p50_ms.length)
            .map(t => [t.t + 2.5, t.p50_ms[i]]);
          if (!pts.length) return '<svg class="sparkline" width="' + W + '" height="' + H + '"></svg>';
          const max = Math.max(1e-9, ...pts.map(p => p[1])) * 1.1;
          const xy = pts.map(([t, v]) => [
            Math.min(W - 3, Math.max(3, (t - (now - span)) / span * (W - 6) + 3)),
            H - 3 - (v / max) * (H - 6)]);
          const last = xy[xy.length - 1];
          return '<svg class="sparkline" width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H + '">' +
            '<title>p50 per 5 s: ' + pts.map(p => ms(p[1])).join(', ') + ' ms</title>' +
            '<line x1="0" y1="' + (H - 3) + '" x2="' + W + '" y2="' + (H - 3) + '" stroke="#dde2e8"/>' +
            (xy.length > 1 ? '<polyline fill="none" stroke="' + color + '" stroke-width="1.6" points="' +
              xy.map(p => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ') + '"/>' : '') +
            '<circle cx="' + last[0].toFixed(1) + '" cy="' + last[1].toFixed(1) + '" r="2.4" fill="' + color + '"/></svg>';
        }

        el('demo-form').addEventListener('submit', async ev => {
          ev.preventDefault();
          const q = new URLSearchParams();
          for (const input of ev.target.querySelectorAll('input')) {
            if (input.value.trim()) q.set(input.name, input.value.trim());
          }
          const out = el('demo-result');
          if (![...q.keys()].length) { out.textContent = 'enter a value first'; return; }
          try {
            const r = await fetch('/api/v1/demo?' + q.toString(), { cache: 'no-store' });
            out.textContent = r.ok ? 'applied; watch the matching segment move' : (await r.text()).trim();
            if (r.ok) for (const input of ev.target.querySelectorAll('input')) input.value = '';
          } catch (e) {
            out.textContent = 'failed: ' + e;
          }
        });

        tick();
        </script>
        </body>
        </html>
        """#
}
