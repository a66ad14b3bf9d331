/// The live status page, built into the binary (no external assets): it polls
/// `/api/v1/hops` and `/api/v1/diagnose` and renders them.
enum StatusPage {
    static let html = """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>Insight status</title></head>
        <body><h1>Insight</h1><pre id="hops">loading…</pre><pre id="diagnose"></pre>
        <script>
        async function tick() {
          const h = await (await fetch('/api/v1/hops')).json();
          document.getElementById('hops').textContent = JSON.stringify(h, null, 2);
          const d = await (await fetch('/api/v1/diagnose')).json();
          document.getElementById('diagnose').textContent = d.paths.map(p => p.service + '/' + p.method + ' (' + p.source + '): ' + p.verdict).join('\\n');
        }
        tick(); setInterval(tick, 2000);
        </script></body></html>
        """
}
