"""What people see in the browser: sign-in, the home page (and, later, the per-user Gradio workspace)."""
