"""Sources (one loader per format), the CTR task builder and prompt templates."""
