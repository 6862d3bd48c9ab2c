# bash completion for grainctl. Nothing installs it; source it, or copy it
# to /usr/share/bash-completion/completions/grainctl.
_grainctl()
{
	local cur prev words cword
	_init_completion 2>/dev/null || {
		cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}
		words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
	}
	local globals="--host --hosts-file --token-file --output -o --timeout --parallel --cacert --cert --key --help --version"

	case $prev in
	-o|--output) COMPREPLY=($(compgen -W "table json jsonl" -- "$cur")); return ;;
	--hosts-file|--token-file|-f|--file|--cacert|--cert|--key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	--host|--timeout|--parallel|--name|--if-match|--probe|--map|--after|--limit|--labels) return ;;
	esac

	# The command words so far, options and their values skipped.
	local i family= verb=
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--host|--hosts-file|--token-file|--output|-o|--timeout|--parallel|--name|-n|\
		--cacert|--cert|--key|--file|-f|--if-match|--probe|--map|--after|--limit|--labels) ((i++)) ;;
		-*) ;;
		*) if [[ -z $family ]]; then family=${words[i]}; elif [[ -z $verb ]]; then verb=${words[i]}; fi ;;
		esac
	done

	if [[ -z $family ]]; then
		COMPREPLY=($(compgen -W "status plan apply prometheus-targets objects probes maps samples sinks $globals" -- "$cur"))
		return
	fi
	if [[ -z $verb && $family != status && $family != plan && $family != apply && $family != prometheus-targets ]]; then
		case $family in
		objects) COMPREPLY=($(compgen -W "push ls get rm verify" -- "$cur")) ;;
		probes) COMPREPLY=($(compgen -W "ls get put attach detach rm" -- "$cur")) ;;
		maps) COMPREPLY=($(compgen -W "dump" -- "$cur")) ;;
		samples) COMPREPLY=($(compgen -W "ls tail" -- "$cur")) ;;
		sinks) COMPREPLY=($(compgen -W "ls get apply rm" -- "$cur")) ;;
		esac
		return
	fi
	local opts=
	case "$family $verb" in
	"objects push") opts="--name"; [[ $cur != -* ]] && { COMPREPLY=($(compgen -f -- "$cur")); return; } ;;
	"probes put") opts="--file -f --if-match" ;;
	"sinks apply") opts="--file -f" ;;
	"samples ls") opts="--probe --map --after --limit" ;;
	"samples tail") opts="--probe --map --after --follow -f" ;;
	"plan "*|"apply "*) opts="--file -f --prune" ;;
	"prometheus-targets "*) opts="--file -f --labels" ;;
	esac
	COMPREPLY=($(compgen -W "$opts $globals" -- "$cur"))
}
complete -F _grainctl grainctl
