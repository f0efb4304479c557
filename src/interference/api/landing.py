"""What ``GET /`` shows a person who opens the server in a browser."""

from __future__ import annotations

from html import escape

from interference import __version__


def landing_html(base_url: str, model_ids: list[str], aliases: dict[str, str]) -> str:
    models = "".join(f"<li><code>{escape(m)}</code></li>" for m in model_ids)
    alias_list = ", ".join(f"<code>{escape(a)}</code>" for a in aliases)
    example = escape(model_ids[0] if model_ids else "MODEL")
    base = escape(base_url)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>interference</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;
line-height:1.5;color:#222}}
code,pre{{background:#f3f3f3;border-radius:4px}} pre{{padding:.8rem;overflow-x:auto}}
</style></head>
<body>
<h1>interference</h1>
<p>A local, OpenAI-compatible LLM gateway (version {escape(__version__)}).
Point any OpenAI client at this server.</p>
<h2>Base URL</h2>
<p><code>{base}/v1</code> (the legacy <code>openai</code> 0.x client may use
<code>{base}</code> without <code>/v1</code>). No API key is needed.</p>
<h2>Models</h2>
<ul>{models}</ul>
<p>Also answered, as aliases: {alias_list or "none"}.</p>
<h2>Try it</h2>
<pre>curl {base}/v1/chat/completions \\
  -H 'Content-Type: application/json' \\
  -d '{{"model": "{example}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'</pre>
<pre>from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="none")
print(client.chat.completions.create(model="{example}",
      messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)</pre>
<p>Endpoints: <code>POST /v1/chat/completions</code>, <code>POST /v1/completions</code>,
<code>POST /v1/embeddings</code>, <code>GET /v1/models</code>, <code>GET /v1/providers</code>,
<code>GET /health</code>.</p>
</body></html>
"""
