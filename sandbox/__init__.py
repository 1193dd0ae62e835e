"""The built-in sandbox provider: a real HTTP service that simulates SMS and Viber delivery."""
