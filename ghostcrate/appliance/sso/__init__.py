"""Single sign-on: OpenID Connect providers (generic, Entra ID, Google) and GitHub's OAuth."""
