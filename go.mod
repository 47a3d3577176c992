module github.com/seedchat/chat

go 1.26.8

require (
	github.com/chzyer/readline v1.5.1
	go.uber.org/zap v1.28.0
	golang.org/x/term v0.48.0
	golang.org/x/time v0.16.0
)

require (
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
