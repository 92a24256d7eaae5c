using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Signals for child processes that .NET has no API for (it only kills).</summary>
internal static class ProcessSignals
{
    private const int SigTerm = 15;

    /// <summary>SIGTERM: the process shuts down gracefully if it handles it.</summary>
    public static void Terminate(Process process)
    {
        if (SendSignal(process.Id, SigTerm) != 0)
            throw new InvalidOperationException($"kill({process.Id}, SIGTERM) failed with errno {Marshal.GetLastPInvokeError()}");
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SendSignal(int pid, int signal);
}
