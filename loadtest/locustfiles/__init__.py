"""One locustfile per scenario (see ``loadtest.scenarios``); ``examgate loadtest`` runs them."""
