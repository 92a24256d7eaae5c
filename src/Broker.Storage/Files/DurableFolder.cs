namespace Broker.Storage.Files;

/// <summary>Makes changes to a folder's entries (new files, renames) durable.</summary>
internal static class DurableFolder
{
    /// <summary>
    /// Creates <paramref name="directory"/> (and missing parents) so that it survives a power cut: each folder this
    /// call creates is flushed into its parent.
    /// </summary>
    public static void Create(string directory)
    {
        string full = Path.GetFullPath(directory);
        if (Directory.Exists(full))
            return;
        string? parent = Path.GetDirectoryName(full);
        if (parent is not null)
            Create(parent);
        Directory.CreateDirectory(full);
        if (parent is not null)
            Flush(parent);
    }

    /// <summary>Makes a rename or a new file in <paramref name="directory"/> survive a power cut (fsync of the folder).</summary>
    public static void Flush(string directory)
    {
        if (OperatingSystem.IsWindows())
            return;
        // .NET cannot open a directory as a file handle; fsync needs the raw descriptor.
        int descriptor = NativeMethods.Open(directory, NativeMethods.ReadOnlyDirectory);
        if (descriptor < 0)
            throw new IOException($"cannot open folder {directory} to flush it (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
        try
        {
            if (NativeMethods.Fsync(descriptor) != 0)
                throw new IOException($"fsync of folder {directory} failed (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            _ = NativeMethods.Close(descriptor);
        }
    }
}
