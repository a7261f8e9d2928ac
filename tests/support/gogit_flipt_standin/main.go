// gogit_flipt_standin: a stand-in for Flipt v2's git client in the tests, since the Flipt binary
// cannot be built here. It is our own small program on go-git (the library Flipt uses) that does on
// the wire what Flipt's storage does (read in Flipt's internal/storage/git/repository.go, not
// copied): fetch `+refs/heads/<b>:refs/remotes/origin/<b>`, commit a change on the fetched head,
// push `refs/heads/<b>:refs/heads/<b>` (no force), and on go-git's client-side "non-fast-forward
// update" error fetch and run the write again on the new head; a write that names the revision it
// expects is refused (exit 3) when the head is no longer that revision.
//
// Every command works on an on-disk repository (--dir), so the state between commands is the
// state a Flipt process keeps between its polls. Output: one JSON object on stdout.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

const remoteName = "origin"

// Exit codes the tests read besides the JSON.
const (
	exitError    = 1
	exitUsage    = 2
	exitConflict = 3
)

type result struct {
	Result   string `json:"result"`
	Commit   string `json:"commit,omitempty"`
	Head     string `json:"head,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	Error    string `json:"error,omitempty"`
}

func emit(r result, code int) {
	_ = json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(code)
}

func fail(err error) {
	emit(result{Result: "error", Error: err.Error()}, exitError)
}

// open opens the client's repository, creating it with the remote when it is new.
func open(dir, url string) (*git.Repository, error) {
	repo, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.PlainInit(dir, false)
		if err != nil {
			return nil, err
		}
		_, err = repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{url}})
	}
	return repo, err
}

// fetch brings the remote's branch into refs/remotes/origin/<branch>, as Flipt's poll does.
func fetch(repo *git.Repository, branch string) (plumbing.Hash, error) {
	spec := config.RefSpec(fmt.Sprintf("+%s:%s",
		plumbing.NewBranchReferenceName(branch), plumbing.NewRemoteReferenceName(remoteName, branch)))
	err := repo.Fetch(&git.FetchOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{spec}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return plumbing.ZeroHash, err
	}
	ref, err := repo.Reference(plumbing.NewRemoteReferenceName(remoteName, branch), true)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return ref.Hash(), nil
}

func head(repo *git.Repository, branch string) (plumbing.Hash, error) {
	ref, err := repo.Reference(plumbing.NewRemoteReferenceName(remoteName, branch), true)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return ref.Hash(), nil
}

// commitOn writes `content` to `file` on top of `parent` and returns the new commit.
func commitOn(repo *git.Repository, parent plumbing.Hash, file, content, message string) (plumbing.Hash, error) {
	wt, err := repo.Worktree()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: parent, Force: true}); err != nil {
		return plumbing.ZeroHash, err
	}
	path := filepath.Join(wt.Filesystem.Root(), file)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := wt.Add(file); err != nil {
		return plumbing.ZeroHash, err
	}
	sig := &object.Signature{Name: "Flipt stand-in", Email: "standin@flipt.invalid", When: time.Now()}
	return wt.Commit(message, &git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true})
}

func push(repo *git.Repository, spec string) error {
	err := repo.Push(&git.PushOptions{RemoteName: remoteName, RefSpecs: []config.RefSpec{config.RefSpec(spec)}})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

// write is Flipt's UpdateAndPush with its caller's retry: resolve the head, check the expected
// revision, commit, push; on a client-side non-fast-forward, fetch and go again.
func write(repo *git.Repository, branch, file, content, message, expect string, attempts int) {
	for attempt := 1; attempt <= attempts; attempt++ {
		parent, err := head(repo, branch)
		if err != nil {
			fail(err)
		}
		if expect != "" && parent.String() != expect {
			emit(result{Result: "conflict", Head: parent.String(), Attempts: attempt,
				Error: fmt.Sprintf("expected head revision %q has changed (now %q)", expect, parent)}, exitConflict)
		}
		commit, err := commitOn(repo, parent, file, content, message)
		if err != nil {
			fail(err)
		}
		local := plumbing.NewBranchReferenceName(branch)
		if err := repo.Storer.SetReference(plumbing.NewHashReference(local, commit)); err != nil {
			fail(err)
		}
		err = push(repo, fmt.Sprintf("%[1]s:%[1]s", local))
		if err == nil {
			tracking := plumbing.NewHashReference(plumbing.NewRemoteReferenceName(remoteName, branch), commit)
			if err := repo.Storer.SetReference(tracking); err != nil {
				fail(err)
			}
			emit(result{Result: "pushed", Commit: commit.String(), Attempts: attempt}, 0)
		}
		if !strings.Contains(err.Error(), "non-fast-forward update") {
			emit(result{Result: "error", Commit: commit.String(), Attempts: attempt, Error: err.Error()}, exitError)
		}
		if _, err := fetch(repo, branch); err != nil {
			fail(err)
		}
	}
	emit(result{Result: "error", Attempts: attempts, Error: "still non-fast-forward after every attempt"}, exitError)
}

func main() {
	flags := flag.NewFlagSet("gogit_flipt_standin", flag.ContinueOnError)
	dir := flags.String("dir", "", "the client's repository (created when missing)")
	url := flags.String("url", "", "the remote (the sidecar)")
	branch := flags.String("branch", "main", "branch")
	file := flags.String("file", "", "write: path of the file to write")
	content := flags.String("content", "", "write: the file's new content")
	message := flags.String("message", "update flags", "write: commit message")
	expect := flags.String("expect-revision", "", "write: refuse unless the head is this revision")
	attempts := flags.Int("attempts", 5, "write: tries on non-fast-forward")
	from := flags.String("from", "", "create-branch: the branch to start from")
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gogit_flipt_standin fetch|write|create-branch|delete-branch [flags]")
		os.Exit(exitUsage)
	}
	if err := flags.Parse(os.Args[2:]); err != nil || *dir == "" || *url == "" {
		os.Exit(exitUsage)
	}
	repo, err := open(*dir, *url)
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "fetch":
		hash, err := fetch(repo, *branch)
		if err != nil {
			fail(err)
		}
		emit(result{Result: "fetched", Head: hash.String()}, 0)
	case "write":
		write(repo, *branch, *file, *content, *message, *expect, *attempts)
	case "create-branch":
		// As Flipt creates an environment branch: the new branch starts at the base's head.
		base, err := head(repo, *from)
		if err != nil {
			fail(err)
		}
		local := plumbing.NewBranchReferenceName(*branch)
		if err := repo.Storer.SetReference(plumbing.NewHashReference(local, base)); err != nil {
			fail(err)
		}
		if err := push(repo, fmt.Sprintf("%[1]s:%[1]s", local)); err != nil {
			fail(err)
		}
		emit(result{Result: "created", Commit: base.String()}, 0)
	case "delete-branch":
		if err := push(repo, ":"+plumbing.NewBranchReferenceName(*branch).String()); err != nil {
			fail(err)
		}
		emit(result{Result: "deleted"}, 0)
	default:
		os.Exit(exitUsage)
	}
}
