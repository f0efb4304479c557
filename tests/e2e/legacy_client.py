# type: ignore
"""The seed script's calls under the legacy ``openai==0.28.1`` client, with the URL and mode as
arguments: ``python legacy_client.py http://127.0.0.1:PORT stream|nostream``."""

import sys

import openai

openai.api_key = ""
openai.api_base = sys.argv[1]

chat_completion = openai.ChatCompletion.create(
    model="gpt-3.5-turbo",
    messages=[{"role": "user", "content": "write a poem about a tree"}],
    stream=sys.argv[2] == "stream",
)

if isinstance(chat_completion, dict):
    print(chat_completion.choices[0].message.content)
else:
    for token in chat_completion:
        content = token["choices"][0]["delta"].get("content")
        if content != None:  # noqa: E711 - exactly as the seed script does
            print(content, end="", flush=True)
