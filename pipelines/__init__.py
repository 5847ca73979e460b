"""Named parameter presets (TOML), installed with the package as microbleeds.pipelines."""
