module github.com/seedchat/chat

go 1.26.8

require go.uber.org/zap v1.28.0

require (
	github.com/chzyer/readline v1.5.1 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/term v0.48.0 // indirect
)
