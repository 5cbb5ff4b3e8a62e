"""The chat template lorag gives a base model whose tokenizer has none.

Gemma's turn format (`<start_of_turn>user … <end_of_turn>`, the model's turn named `model`),
with a system message folded into the first user turn as Gemma does. The assistant's text
sits in a `{% generation %}` block so that transformers can return the assistant-token mask
used for the loss (`return_assistant_tokens_mask=True`); the `<end_of_turn>` that closes an
assistant turn is inside the block, so the model learns to stop.
"""

from __future__ import annotations

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] | trim -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<start_of_turn>user\\n' -}}"
    "{%- if loop.first and system -%}{{- system + '\\n\\n' -}}{%- endif -%}"
    "{{- message['content'] | trim -}}{{- '<end_of_turn>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<start_of_turn>model\\n' -}}"
    "{%- generation -%}{{- message['content'] | trim -}}{{- '<end_of_turn>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)
