"""Alert analysis: the deterministic rule analyzer and the optional LLM analyzer."""
