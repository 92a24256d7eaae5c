using System.Globalization;

namespace Broker.Perf;

/// <summary>
/// CPU time of processes the perf runners start, from <c>/proc/&lt;pid&gt;/stat</c> (user and system time, fields 14
/// and 15, in clock ticks of 1/100 s). Linked into every runner that measures a server it launched.
/// </summary>
internal static class ProcStat
{
    /// <summary>User and system CPU of one process so far; throws when it is gone.</summary>
    public static TimeSpan CpuTime(int pid) => Parse(File.ReadAllText($"/proc/{pid}/stat")).Cpu;

    /// <summary>User and system CPU of the process and every descendant alive now (RabbitMQ's beam runs under a script).</summary>
    public static TimeSpan CpuTimeOfTree(int root)
    {
        var children = new Dictionary<int, List<int>>();
        var cpu = new Dictionary<int, TimeSpan>();
        foreach (string directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out int pid))
                continue;
            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(directory, "stat"));
            }
            catch (IOException)
            {
                continue;   // exited meanwhile
            }
            var (parent, time) = Parse(stat);
            cpu[pid] = time;
            if (!children.TryGetValue(parent, out var list))
                children[parent] = list = [];
            list.Add(pid);
        }
        var total = TimeSpan.Zero;
        var pending = new Stack<int>([root]);
        while (pending.TryPop(out int pid))
        {
            total += cpu.GetValueOrDefault(pid);
            foreach (int child in children.GetValueOrDefault(pid) ?? [])
                pending.Push(child);
        }
        return total;
    }

    private static (int Parent, TimeSpan Cpu) Parse(string stat)
    {
        // The command name (field 2) may hold spaces and parentheses: the fields after it start after the last ')'.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return (int.Parse(fields[1], CultureInfo.InvariantCulture), TimeSpan.FromSeconds(ticks / 100.0));
    }
}
