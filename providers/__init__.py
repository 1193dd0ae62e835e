"""Provider adapters behind one small interface: send one message; verify and parse a webhook.

One module per provider; adding a provider touches nothing else but the registry.
"""
