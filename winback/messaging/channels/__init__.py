"""Channel adapters: one small interface (`base.Channel`), one module per provider."""
