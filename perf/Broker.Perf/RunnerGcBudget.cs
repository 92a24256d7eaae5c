using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Broker.Perf;

/// <summary>
/// Gives the load generator's own GC a 64 MiB gen0 budget. The runner shares the machine with the broker, so every
/// CPU second it spends is one the broker does not get. .NET sizes gen0 from the CPU's cache sizes, and this kind of
/// VM reports none: the default budget falls back to about 6 MiB, one gen0 GC per 6 MiB allocated, and the runner
/// allocates a few KiB per message (payloads out, parsed deliveries in). Measured on W2, broker started apart: runner
/// CPU 12.6–14.5 s with the default against 8.7–10.7 s with this budget for the same 1.5M messages.
/// <para>The budget (<c>DOTNET_GCgen0size</c>) can only be set in the environment, before the runtime starts (a
/// <c>runtimeconfig.json</c> entry is ignored), so the runner starts itself again once with it. The broker it
/// launches does not inherit it: the broker is measured with its own settings. A budget set by the caller is left
/// alone and, as every variable, reaches the broker too.</para>
/// </summary>
internal static class RunnerGcBudget
{
    private const string BudgetVariable = "DOTNET_GCgen0size";
    private const string Budget = "0x4000000";
    private const string RestartedVariable = "BROKER_PERF_RESTARTED_WITH_GC_BUDGET";

    /// <summary>True when this process runs without a gen0 budget of its caller's or its own choosing.</summary>
    public static bool NeedsRestart =>
        Environment.GetEnvironmentVariable(BudgetVariable) is null && Environment.GetEnvironmentVariable(RestartedVariable) is null;

    /// <summary>Runs this program again with the budget, on the same console, and returns its exit code.</summary>
    public static async Task<int> RunRestartedAsync(string[] args)
    {
        string host = Environment.ProcessPath ?? throw new InvalidOperationException("unknown process path");
        var start = new ProcessStartInfo(host) { UseShellExecute = false };
        // Started as "dotnet Broker.Perf.dll", the host needs the program's assembly; the apphost does not.
        if (Path.GetFileNameWithoutExtension(host) == "dotnet")
            start.ArgumentList.Add(Assembly.GetEntryAssembly()!.Location);
        foreach (string argument in args)
            start.ArgumentList.Add(argument);
        start.Environment[BudgetVariable] = Budget;
        start.Environment[RestartedVariable] = "1";
        using var child = Process.Start(start) ?? throw new InvalidOperationException("could not restart the runner");
        // Ctrl-C reaches the whole process group: the restarted runner stops its run and its broker; this one waits.
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => context.Cancel = true);
        await child.WaitForExitAsync();
        return child.ExitCode;
    }

    /// <summary>Keeps the runner's own budget out of a broker it launches.</summary>
    public static void KeepOutOf(ProcessStartInfo broker)
    {
        if (Environment.GetEnvironmentVariable(RestartedVariable) is not null)
            broker.Environment.Remove(BudgetVariable);
    }
}
