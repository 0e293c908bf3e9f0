"""DUALRec stages 2 and 3: LLM backends, prompts, parsing and grounding, SBERT re-ranking, LoRA fine-tuning,
catalog-constrained generation and candidate scoring. One job per module; heavy libraries load inside functions,
so importing ``dualrec.llm`` is cheap."""
