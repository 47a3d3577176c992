// Package e2e holds end-to-end tests of the example programs.
package e2e
